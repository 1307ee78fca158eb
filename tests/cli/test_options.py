"""dnet.cli.options: the option parsers every verb shares, and defaults taken from the library."""

from __future__ import annotations

import pytest

from dnet.cli.options import default, parse_batch_sizes, parse_profile
from dnet.converters.int8.options import Int8Options
from dnet.converters.tensorrt import PROFILE, BuildOptions
from dnet.core.errors import UsageError


def test_parse_profile_accepts_min_opt_max_and_one_number():
    assert parse_profile("1,8,32") == (1, 8, 32)
    assert parse_profile(" 2, 4 ,4") == (2, 4, 4)
    assert parse_profile("16") == (16, 16, 16)


@pytest.mark.parametrize(
    "text, message",
    [
        ("8,1,32", "profile '8,1,32' must satisfy 1 <= min <= opt <= max"),
        ("0,1,2", "profile '0,1,2' must satisfy 1 <= min <= opt <= max"),
        ("1,64,32", "profile '1,64,32' must satisfy 1 <= min <= opt <= max"),
        ("1,8", "profile '1,8' is not MIN,OPT,MAX (three whole numbers, e.g. 1,8,32)"),
        ("1,8,x", "profile '1,8,x' is not MIN,OPT,MAX (three whole numbers, e.g. 1,8,32)"),
        ("1.5,2,4", "profile '1.5,2,4' is not MIN,OPT,MAX (three whole numbers, e.g. 1,8,32)"),
    ],
)
def test_parse_profile_refuses_with_one_line(text, message):
    with pytest.raises(UsageError) as e:
        parse_profile(text)
    assert str(e.value) == message and e.value.option == "profile"




def test_batch_sizes_parse_and_refuse():
    assert parse_batch_sizes("1,8,32") == [1, 8, 32]
    with pytest.raises(UsageError, match=r"^batch sizes: every batch size must be a positive integer, got '0,2'$"):
        parse_batch_sizes("0,2")
    with pytest.raises(UsageError, match=r"^batch sizes: expected comma-separated integers like 1,8,32, got 'a'$"):
        parse_batch_sizes("a")


def test_defaults_come_from_the_library():
    assert default(BuildOptions, "profile") == PROFILE == (1, 8, 32)
    assert default(Int8Options, "method") == "minmax"
