# tests/qcow2
