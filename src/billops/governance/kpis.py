"""KPIs for a date range (GET /api/kpis and the console overview). Being built: see issue 5."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api", tags=["governance"])
