noinst_LIBRARIES += libdsproto.a
libdsproto_a_SOURCES = protocol/nbd-wire.h protocol/protocol.h protocol/protocol.c
