systemdsystemunit_DATA = systemd/diskserve.socket systemd/diskserve.service \
	systemd/diskserve@.service
EXTRA_DIST += $(systemdsystemunit_DATA)
