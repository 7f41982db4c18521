from __future__ import annotations

from pathlib import Path

import pytest

from rartsprune.topology import NatsTable, format_nats_arch, load_nats_table, lookup_nats

TABLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "nats-bench" / "tss_test_accuracy_200ep.csv"
ALL_SKIP = format_nats_arch(["skip_connect"] * 6)
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def _write(path: Path, rows: list[str], header: str = "index,arch,cifar10_test,cifar100_test,imagenet16_120_test"):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_small_table_lookup_and_cache(tmp_path):
    p = _write(tmp_path / "t.csv", [f"7,{ALL_SKIP},54.3,15.61,16.32", f"9,{BEST},94.37,73.2,46.0"])
    t = load_nats_table(p)
    assert len(t) == 2
    rec = t.lookup(ALL_SKIP)
    assert (rec.index, rec.cifar10_test, rec.cifar100_test, rec.imagenet16_120_test) == (7, 54.3, 15.61, 16.32)
    assert t.best().arch == BEST
    assert load_nats_table(p) is t  # cached per path
    assert lookup_nats(BEST, p).to_dict()["cifar10_test"] == 94.37


def test_cache_reloads_changed_file(tmp_path):
    p = _write(tmp_path / "t.csv", [f"7,{ALL_SKIP},54.3,15.61,16.32"])
    assert load_nats_table(p).lookup(ALL_SKIP).cifar10_test == 54.3
    _write(p, [f"7,{ALL_SKIP},55.5,15.61,16.32", f"9,{BEST},94.37,73.2,46.0"])
    assert load_nats_table(p).lookup(ALL_SKIP).cifar10_test == 55.5


def test_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_nats_table(tmp_path / "missing.csv")
    bad = _write(tmp_path / "bad.csv", [f"7,{ALL_SKIP},54.3"], header="index,arch,cifar10_test")
    with pytest.raises(ValueError, match="lacks column"):
        load_nats_table(bad)
    nonnum = _write(tmp_path / "nonnum.csv", [f"7,{ALL_SKIP},abc,1,1"])
    with pytest.raises(ValueError, match="line 2"):
        load_nats_table(nonnum)
    p = _write(tmp_path / "t.csv", [f"7,{ALL_SKIP},54.3,15.61,16.32"])
    with pytest.raises(ValueError, match="not in the NATS table"):
        lookup_nats(BEST, p)
    with pytest.raises(ValueError, match="malformed"):
        lookup_nats("|skip_connect~0|", p)
    with pytest.raises(ValueError, match="unknown metric"):
        load_nats_table(p).best("top5")


def test_duplicate_rows_rejected():
    from rartsprune.topology.nats_table import NatsRecord

    with pytest.raises(ValueError, match="duplicate"):
        NatsTable([NatsRecord(0, ALL_SKIP, 1, 1, 1), NatsRecord(1, ALL_SKIP, 2, 2, 2)])


@pytest.mark.skipif(not TABLE.is_file(), reason="shared NATS-Bench table (../shared/data/nats-bench) not present")
def test_real_table_reference_points():
    t = load_nats_table(TABLE)
    assert len(t) == 15625
    skip = t.lookup(ALL_SKIP)
    assert skip.index == 1835
    assert round(skip.cifar10_test, 2) == 54.30
    assert round(skip.cifar100_test, 2) == 15.61
    best = t.best("cifar10_test")
    assert best.index == 6111 and round(best.cifar10_test, 2) == 94.37
    assert lookup_nats(BEST, TABLE).index == 6111
