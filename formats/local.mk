noinst_LIBRARIES += libdsformats.a
libdsformats_a_SOURCES = \
	formats/image.h formats/image.c \
	formats/io.h formats/io.c formats/io-backend.h \
	formats/raw.c
libdsformats_a_CFLAGS = $(AM_CFLAGS) $(ZLIB_CFLAGS) $(ZSTD_CFLAGS) $(NETTLE_CFLAGS) $(ISAL_CFLAGS)
FORMATS_LIBS = libdsformats.a $(ZLIB_LIBS) $(ZSTD_LIBS) $(NETTLE_LIBS) $(ISAL_LIBS) $(RBD_LIBS)
if HAVE_RBD
libdsformats_a_SOURCES += formats/rbd.c
endif

include formats/qcow2/local.mk
include formats/vhdx/local.mk
