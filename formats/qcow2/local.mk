# qcow2 driver sources are added to libdsformats_a_SOURCES here.
libdsformats_a_SOURCES += formats/qcow2/crypto.h formats/qcow2/crypto-int.h \
	formats/qcow2/crypto.c formats/qcow2/luks.c
