"""Drivers: one module per piece of hardware, over VISA or pyserial wires.

Drivers know nothing of the application (instrument), the GUI or the emulators.
"""
