# diskserve-img: create / info / map / check, reusing formats/.
bin_PROGRAMS += diskserve-img
diskserve_img_SOURCES = tools/diskserve-img.c
diskserve_img_CFLAGS = $(AM_CFLAGS) $(JSONC_CFLAGS)
diskserve_img_LDADD = $(FORMATS_LIBS) $(JSONC_LIBS)
