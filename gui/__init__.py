"""PySide6 + pyqtgraph windows over the instrument services."""
