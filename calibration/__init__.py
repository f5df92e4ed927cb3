"""Procedures that measure the instruments, and the records they produce."""
