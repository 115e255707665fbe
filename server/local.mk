bin_PROGRAMS += diskserve
diskserve_SOURCES = \
	server/server.h \
	server/main.c \
	server/options.c \
	server/log.c \
	server/workers.c \
	server/listen.c \
	server/activation.c \
	server/conn.c \
	server/handshake.c \
	server/request.c \
	server/reply.c \
	server/output.c \
	server/splice.c \
	server/export.c \
	server/tls.h \
	server/tls.c \
	server/control.h \
	server/control.c \
	server/qmp.c \
	server/rbd-direct.c
diskserve_CFLAGS = $(AM_CFLAGS) $(UV_CFLAGS) $(INIH_CFLAGS) $(JSONC_CFLAGS) \
	$(GNUTLS_CFLAGS)
diskserve_LDADD = libdsproto.a $(FORMATS_LIBS) $(UV_LIBS) $(INIH_LIBS) \
	$(JSONC_LIBS) $(GNUTLS_LIBS)
