# tests/server
