"""Shared fixtures. Keep this file small: most fixtures belong next to their tests."""

from __future__ import annotations

import os

# Ray and faiss spawn thread pools sized to the machine; two cores are all we have.
os.environ.setdefault("OMP_NUM_THREADS", "1")
