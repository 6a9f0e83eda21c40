"""Runnable examples of statemachine-orch workflows."""
