# diskserve-img: create / info / map / check / bitmap, reusing formats/.
bin_PROGRAMS += diskserve-img
diskserve_img_SOURCES = tools/diskserve-img.c tools/img-tool.h \
	tools/img-util.c tools/img-create.c tools/img-info.c \
	tools/img-map.c tools/img-check.c tools/img-bitmap.c
diskserve_img_CFLAGS = $(AM_CFLAGS) $(JSONC_CFLAGS)
diskserve_img_LDADD = $(FORMATS_LIBS) $(JSONC_LIBS)
