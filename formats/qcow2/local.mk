# qcow2 driver sources are added to libdsformats_a_SOURCES here.
