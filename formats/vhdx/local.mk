# VHDX driver sources ([MS-VHDX]), added to libdsformats.a.
libdsformats_a_SOURCES += formats/vhdx/vhdx.h formats/vhdx/vhdx.c \
	formats/vhdx/crc32c.c formats/vhdx/header.c formats/vhdx/region.c \
	formats/vhdx/metadata.c formats/vhdx/bat.c formats/vhdx/log.c \
	formats/vhdx/parent.c formats/vhdx/write.c formats/vhdx/diffwrite.c \
	formats/vhdx/logwrite.c formats/vhdx/create.c \
	formats/vhdx/create.h
