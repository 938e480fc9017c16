"""Every protocol limit has a floor and a ceiling, checked when a Limits is made (no loop)."""

from __future__ import annotations

import pytest

from fcgi_async.protocol import Limits
from fcgi_async.protocol.limits import _CEILINGS


@pytest.mark.parametrize("name", sorted(_CEILINGS))
def test_protocol_limits_have_ceilings(name: str) -> None:
    ceiling = _CEILINGS[name]
    assert getattr(Limits(**{name: ceiling}), name) == ceiling
    for bad in (0, ceiling + 1, 2**64, 1.5):
        with pytest.raises(ValueError, match=f"{name} must be a whole number from 1 to"):
            Limits(**{name: bad})
