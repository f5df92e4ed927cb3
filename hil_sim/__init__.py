"""The emulated lab: instrument emulators speaking the real wire protocols, over physics models.

hil_sim is hardware: it knows physics and wire protocols, nothing of our drivers.
"""
