from __future__ import annotations

import pytest
import torch

from rartsprune.topology import (
    DARTS_PRIMITIVES,
    DARTS_V2,
    NATS_PRIMITIVES,
    DartsGenotype,
    derive_darts_genotype,
    derive_nats_arch,
    format_nats_arch,
    op_histogram,
    parse_nats_arch,
    skip_ratio,
    validate_nats_arch,
)

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def test_nats_roundtrip_and_edge_order():
    ops = parse_nats_arch(BEST)
    assert ops == ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "nor_conv_1x1")
    assert format_nats_arch(ops) == BEST
    assert validate_nats_arch(BEST) is BEST


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "expected 3 nodes"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv' at node 1"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 must have 2 input(s), got 1"),
        ("|none~0|+|none~0|none~2|+|none~0|none~1|none~2|", "input 1 of node 2 must be '~1', got '~2'"),
        ("|none0|+|none~0|none~1|+|none~0|none~1|none~2|", "lacks '~<input>'"),
        ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "must start and end with '|'"),
        ("|none~0| +|none~0|none~1|+|none~0|none~1|none~2|", "whitespace"),
    ],
)
def test_nats_malformed_strings_name_the_problem(bad, fragment):
    with pytest.raises(ValueError) as err:
        parse_nats_arch(bad)
    assert fragment in str(err.value)


def test_nats_parse_rejects_non_string():
    with pytest.raises(TypeError):
        parse_nats_arch(None)  # type: ignore[arg-type]


def test_format_nats_rejects_wrong_length_and_op():
    with pytest.raises(ValueError, match="6 edges"):
        format_nats_arch(["none"] * 5)
    with pytest.raises(ValueError, match="unknown NATS-Bench op 'sep_conv_3x3' on edge 2"):
        format_nats_arch(["none", "none", "sep_conv_3x3", "none", "none", "none"])


def test_derive_nats_arch_argmax_none_allowed():
    alpha = torch.zeros(6, 5)
    choice = [0, 1, 2, 3, 4, 0]
    for e, k in enumerate(choice):
        alpha[e, k] = 1.0
    arch = derive_nats_arch(alpha)
    assert parse_nats_arch(arch) == tuple(NATS_PRIMITIVES[k] for k in choice)
    with pytest.raises(ValueError, match="shape"):
        derive_nats_arch(torch.zeros(5, 5))


def test_derive_nats_arch_exclude_none():
    # none is the strongest op on every edge; the runner-up differs per edge
    alpha = torch.full((6, 5), -1.0)
    alpha[:, 0] = 5.0
    second = [1, 2, 3, 4, 3, 2]
    for e, k in enumerate(second):
        alpha[e, k] = 0.5
    assert parse_nats_arch(derive_nats_arch(alpha)) == ("none",) * 6
    arch = derive_nats_arch(alpha, exclude_none=True)
    assert parse_nats_arch(arch) == tuple(NATS_PRIMITIVES[k] for k in second)
    # without none among the candidates the option changes nothing; with only none it is an error
    ops = ["skip_connect", "nor_conv_3x3"]
    sub = torch.tensor([[0.1, 0.2]] * 6)
    assert derive_nats_arch(sub, ops, exclude_none=True) == derive_nats_arch(sub, ops)
    with pytest.raises(ValueError, match="needs an op other than 'none'"):
        derive_nats_arch(torch.zeros(6, 1), ["none"], exclude_none=True)


def test_derive_darts_genotype_top2_by_best_non_none_weight():
    a = torch.full((14, 8), -5.0)
    none = DARTS_PRIMITIVES.index("none")
    sep3 = DARTS_PRIMITIVES.index("sep_conv_3x3")
    skip = DARTS_PRIMITIVES.index("skip_connect")
    # node 0 (edges 0,1): 'none' is the largest weight on edge 0 but must be ignored for ranking/op choice
    a[0, none] = 10.0
    a[0, sep3] = 1.0
    a[1, skip] = 2.0
    # node 1 (edges 2,3,4): strongest inputs are 4 (input 2) and 2 (input 0)
    a[2, sep3] = 3.0
    a[3, sep3] = 0.5
    a[4, skip] = 4.0
    g = derive_darts_genotype(a, a)
    assert g.normal[:2] == (("skip_connect", 1), ("sep_conv_3x3", 0))
    assert g.normal[2:4] == (("skip_connect", 2), ("sep_conv_3x3", 0))
    assert g.normal_concat == (2, 3, 4, 5)
    assert g == derive_darts_genotype(a, a)


def test_darts_genotype_dict_roundtrip_and_validation():
    assert DartsGenotype.from_dict(DARTS_V2.to_dict()) == DARTS_V2
    d = DARTS_V2.to_dict()
    d["normal"][3] = ["sep_conv_3x3", 3]  # node 1 may only read inputs 0..2
    with pytest.raises(ValueError, match="normal edge 3: input 3 must be in"):
        DartsGenotype.from_dict(d)
    d = DARTS_V2.to_dict()
    d["reduce"][0] = ["none", 0]
    with pytest.raises(ValueError, match="reduce edge 0"):
        DartsGenotype.from_dict(d)
    with pytest.raises(ValueError, match="lacks"):
        DartsGenotype.from_dict({"normal": []})


def test_skip_ratio_and_histogram():
    assert skip_ratio(BEST) == pytest.approx(1 / 6)
    all_skip = format_nats_arch(["skip_connect"] * 6)
    assert skip_ratio(all_skip) == 1.0
    assert skip_ratio(DARTS_V2, "normal") == 0.25
    assert skip_ratio(DARTS_V2, "reduce") == 0.375
    assert skip_ratio(DARTS_V2) == pytest.approx(5 / 16)
    assert op_histogram(BEST) == {"nor_conv_3x3": 4, "skip_connect": 1, "nor_conv_1x1": 1}
    with pytest.raises(TypeError):
        skip_ratio(3)  # type: ignore[arg-type]
