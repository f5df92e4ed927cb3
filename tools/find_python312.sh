#!/bin/sh
# Print the path of a working Python 3.12 interpreter, or explain how to get one.
# brainpaste pins Python 3.12: PySide6 6.12 on Python 3.11 crashed a pyqtgraph
# redraw loop (Fatal Python error: none_dealloc); on 3.12 the same loop runs clean.
set -u
works() { [ -n "$1" ] && "$1" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; }

for cand in "${BRAINPASTE_PYTHON:-}" "$(command -v python3.12 2>/dev/null)"; do
    if works "$cand"; then echo "$cand"; exit 0; fi
done
# pyenv keeps versions off PATH unless selected; look in its tree directly.
roots="${PYENV_ROOT:-} $HOME/.pyenv /root/.pyenv /opt/pyenv"
if command -v pyenv >/dev/null 2>&1; then roots="$(pyenv root) $roots"; fi
for root in $roots; do
    for cand in $(ls -d "$root"/versions/3.12*/bin/python3.12 2>/dev/null | sort -r); do
        if works "$cand"; then echo "$cand"; exit 0; fi
    done
done
for cand in /usr/local/bin/python3.12 /usr/bin/python3.12 /opt/python3.12/bin/python3.12; do
    if works "$cand"; then echo "$cand"; exit 0; fi
done
cat >&2 <<'MSG'
brainpaste needs Python 3.12 (with venv) and could not find it.
  - with pyenv:          pyenv install 3.12
  - Debian 13 / Ubuntu 24.04:  apt-get install python3.12 python3.12-venv
  - or point at one:     make BRAINPASTE_PYTHON=/path/to/python3.12 test
Python 3.11 is not accepted: PySide6 6.12 crashes a pyqtgraph redraw loop on it.
MSG
exit 1
