"""The connection panel: where the lab configuration came from, each instrument's identity
and state, connect/disconnect, and each error next to the instrument it happened on."""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from instrument.live import InstrumentState

COLUMNS = ("instrument", "driver", "state", "identity / error", "resource")
STATE_COLOURS = {
    "connected": "#2e8b57",
    "connecting": "#b8860b",
    "error": "#c03030",
    "disconnected": "#808080",
}


class ConnectionPanel(QtWidgets.QWidget):
    """Instruments table and buttons; the window wires the buttons to the lab on a worker."""

    connect_requested = QtCore.Signal(list)
    """Names of the instruments to connect ([] = all)."""
    disconnect_requested = QtCore.Signal(list)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.source = QtWidgets.QLabel("no lab configuration")
        self.source.setWordWrap(True)
        self.table = QtWidgets.QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QtWidgets.QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QtWidgets.QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.connect_all = QtWidgets.QPushButton("Connect all")
        self.disconnect_all = QtWidgets.QPushButton("Disconnect all")
        self.connect_one = QtWidgets.QPushButton("Connect")
        self.disconnect_one = QtWidgets.QPushButton("Disconnect")
        self.connect_all.clicked.connect(lambda: self.connect_requested.emit([]))
        self.disconnect_all.clicked.connect(lambda: self.disconnect_requested.emit([]))
        self.connect_one.clicked.connect(lambda: self.connect_requested.emit(self.chosen()))
        self.disconnect_one.clicked.connect(lambda: self.disconnect_requested.emit(self.chosen()))
        buttons = QtWidgets.QHBoxLayout()
        for b in (self.connect_all, self.disconnect_all, self.connect_one, self.disconnect_one):
            buttons.addWidget(b)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.source)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        self._states: list[InstrumentState] = []

    def set_source(self, text: str) -> None:
        self.source.setText(f"Lab configuration: {text}")

    def chosen(self) -> list[str]:
        """Names of the instruments selected in the table."""
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [self._states[r].name for r in rows if r < len(self._states)]

    def set_busy(self, busy: bool) -> None:
        for b in (self.connect_all, self.disconnect_all, self.connect_one, self.disconnect_one):
            b.setEnabled(not busy)

    def refresh(self, states: list[InstrumentState]) -> None:
        """Show these states (cheap; called on every change)."""
        if states == self._states:
            return
        self._states = list(states)
        self.table.setRowCount(len(states))
        for row, s in enumerate(states):
            driver = s.driver + (" (emulated)" if s.emulated else "")
            detail = s.error if s.error else s.identity
            cells = (s.name, driver, s.state, detail, s.resource)
            for col, text in enumerate(cells):
                item = QtWidgets.QTableWidgetItem(text)
                item.setToolTip(text)
                if col == 2:
                    item.setForeground(QtGui.QColor(STATE_COLOURS.get(s.state, "#808080")))
                if col == 3 and s.error:
                    item.setForeground(QtGui.QColor(STATE_COLOURS["error"]))
                self.table.setItem(row, col, item)
        self.table.resizeColumnsToContents()

    def row_text(self, name: str) -> dict[str, str]:
        """The cells of instrument ``name`` (tests)."""
        for row, s in enumerate(self._states):
            if s.name == name:
                return {c: self.table.item(row, i).text() for i, c in enumerate(COLUMNS)}
        raise KeyError(name)
