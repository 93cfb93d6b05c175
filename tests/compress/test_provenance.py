"""`Provenance` reads back what it writes into a checkpoint (a resumed run keeps its starting weights'
record), and `first_line` is the one way an exception is quoted inside a one-line error."""

from __future__ import annotations

import pytest
from kdforge.compress.errors import first_line
from kdforge.compress.weights.provenance import Provenance


@pytest.mark.parametrize(
    "source",
    [
        Provenance("/w/r18.pth", "state_dict", "ab" * 32, 60, ("fc.weight", "fc.bias"), (1000, 10)),
        Provenance("torchvision ResNet18_Weights.DEFAULT", "torchvision", "cd" * 32, 62),
    ],
)
def test_from_meta_inverts_as_meta(source: Provenance) -> None:
    assert Provenance.from_meta(source.as_meta()) == source


def test_from_meta_reads_a_malformed_record_as_unknown() -> None:
    read = Provenance.from_meta({"loaded": "many", "reinitialised": 3, "classes": [1]})
    assert read == Provenance("?", "?", "", 0, (), None)


def test_first_line_is_the_messages_first_line_or_the_type() -> None:
    assert first_line(ValueError("broken\nat line 2")) == "broken"
    assert first_line(ValueError("  \n")) == "ValueError"
    assert first_line(OSError("x" * 500), 160) == "x" * 160
