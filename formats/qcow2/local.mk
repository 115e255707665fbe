# qcow2 driver sources are added to libdsformats_a_SOURCES here.
libdsformats_a_SOURCES += formats/qcow2/crypto.h formats/qcow2/crypto-int.h \
	formats/qcow2/crypto.c formats/qcow2/luks.c
libdsformats_a_SOURCES += formats/qcow2/qcow2.h formats/qcow2/qcow2.c \
	formats/qcow2/header.c formats/qcow2/cluster.c \
	formats/qcow2/cache.c formats/qcow2/compress.c \
	formats/qcow2/snapshot.c formats/qcow2/backing.c \
	formats/qcow2/refcount.c formats/qcow2/sync.c formats/qcow2/flush.c \
	formats/qcow2/alloc.c formats/qcow2/inflight.c \
	formats/qcow2/write.c formats/qcow2/zero.c \
	formats/qcow2/bitmap-load.c formats/qcow2/bitmap.c \
	formats/qcow2/bitmap-store.c
libdsformats_a_SOURCES += formats/qcow2/check.h formats/qcow2/check.c \
	formats/qcow2/check-int.h formats/qcow2/check-rebuild.c \
	formats/qcow2/create.h formats/qcow2/create.c
