"""les02-flow: reactive YAML flows for CAN bus data.

The public API is what ``__all__`` lists; every other module is private unless it is named here
(``tests/test_public_api.py`` checks the list).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
