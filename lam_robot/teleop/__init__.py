"""Teleoperation: input devices behind one interface, a real-time recording session with
optional human interventions on a running policy, and replay of recorded input events."""
