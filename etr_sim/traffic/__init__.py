"""Routing decisions + placement -> traffic matrices; collective algorithms -> flow plans. No torch."""
