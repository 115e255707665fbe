# tests/integration: libnbd clients and small scripts against a live
# diskserve, each over a Unix socket and over TCP.  harness.c starts and
# stops the servers; every C program links it.

if HAVE_TESTS

INTEGRATION_HARNESS = \
	tests/integration/harness.c tests/integration/harness.h

INTEGRATION_C_TESTS = \
	tests/integration/handshake-negotiates-every-variant \
	tests/integration/commands-work-with-and-without-fua \
	tests/integration/sparse-file-reports-exact-extents \
	tests/integration/one-connection-carries-64-requests \
	tests/integration/eight-connections-see-each-others-writes \
	tests/integration/read-only-export-refuses-writes \
	tests/integration/requests-past-end-are-refused \
	tests/integration/writes-past-end-report-enospc \
	tests/integration/request-size-limit-is-32mib \
	tests/integration/zero-length-requests-are-no-ops \
	tests/integration/misbehaving-clients-do-not-disturb-others \
	tests/integration/config-serves-several-exports \
	tests/integration/sigterm-keeps-acknowledged-writes \
	tests/integration/shared-limit-queues-extra-clients

INTEGRATION_SH_TESTS = \
	tests/integration/fork-detaches-once-listening.sh \
	tests/integration/oneshot-exits-after-last-client.sh \
	tests/integration/socket-activation-serves-inherited-socket.sh

check_PROGRAMS += $(INTEGRATION_C_TESTS)
TESTS += $(INTEGRATION_C_TESTS) $(INTEGRATION_SH_TESTS)
EXTRA_DIST += $(INTEGRATION_SH_TESTS)

tests_integration_handshake_negotiates_every_variant_SOURCES = \
	tests/integration/handshake-negotiates-every-variant.c \
	$(INTEGRATION_HARNESS)
tests_integration_handshake_negotiates_every_variant_CFLAGS = \
	$(TESTS_LIBNBD_CFLAGS)
tests_integration_handshake_negotiates_every_variant_LDADD = \
	$(TESTS_LIBNBD_LIBS)

tests_integration_commands_work_with_and_without_fua_SOURCES = \
	tests/integration/commands-work-with-and-without-fua.c \
	$(INTEGRATION_HARNESS)
tests_integration_commands_work_with_and_without_fua_CFLAGS = \
	$(TESTS_LIBNBD_CFLAGS)
tests_integration_commands_work_with_and_without_fua_LDADD = \
	$(TESTS_LIBNBD_LIBS)

tests_integration_sparse_file_reports_exact_extents_SOURCES = \
	tests/integration/sparse-file-reports-exact-extents.c \
	$(INTEGRATION_HARNESS)
tests_integration_sparse_file_reports_exact_extents_CFLAGS = \
	$(TESTS_LIBNBD_CFLAGS)
tests_integration_sparse_file_reports_exact_extents_LDADD = \
	$(TESTS_LIBNBD_LIBS)

tests_integration_one_connection_carries_64_requests_SOURCES = \
	tests/integration/one-connection-carries-64-requests.c \
	$(INTEGRATION_HARNESS)
tests_integration_one_connection_carries_64_requests_CFLAGS = \
	$(TESTS_LIBNBD_CFLAGS)
tests_integration_one_connection_carries_64_requests_LDADD = \
	$(TESTS_LIBNBD_LIBS)

tests_integration_eight_connections_see_each_others_writes_SOURCES = \
	tests/integration/eight-connections-see-each-others-writes.c \
	$(INTEGRATION_HARNESS)
tests_integration_eight_connections_see_each_others_writes_CFLAGS = \
	$(TESTS_LIBNBD_CFLAGS)
tests_integration_eight_connections_see_each_others_writes_LDADD = \
	$(TESTS_LIBNBD_LIBS)

tests_integration_read_only_export_refuses_writes_SOURCES = \
	tests/integration/read-only-export-refuses-writes.c \
	$(INTEGRATION_HARNESS)
tests_integration_read_only_export_refuses_writes_CFLAGS = \
	$(TESTS_LIBNBD_CFLAGS)
tests_integration_read_only_export_refuses_writes_LDADD = \
	$(TESTS_LIBNBD_LIBS)

tests_integration_requests_past_end_are_refused_SOURCES = \
	tests/integration/requests-past-end-are-refused.c \
	$(INTEGRATION_HARNESS)
tests_integration_requests_past_end_are_refused_CFLAGS = \
	$(TESTS_LIBNBD_CFLAGS)
tests_integration_requests_past_end_are_refused_LDADD = \
	$(TESTS_LIBNBD_LIBS)

tests_integration_writes_past_end_report_enospc_SOURCES = \
	tests/integration/writes-past-end-report-enospc.c \
	$(INTEGRATION_HARNESS)
tests_integration_writes_past_end_report_enospc_CFLAGS = \
	$(TESTS_LIBNBD_CFLAGS)
tests_integration_writes_past_end_report_enospc_LDADD = \
	$(TESTS_LIBNBD_LIBS)

tests_integration_request_size_limit_is_32mib_SOURCES = \
	tests/integration/request-size-limit-is-32mib.c \
	$(INTEGRATION_HARNESS)
tests_integration_request_size_limit_is_32mib_CFLAGS = \
	$(TESTS_LIBNBD_CFLAGS)
tests_integration_request_size_limit_is_32mib_LDADD = \
	$(TESTS_LIBNBD_LIBS)

tests_integration_zero_length_requests_are_no_ops_SOURCES = \
	tests/integration/zero-length-requests-are-no-ops.c \
	$(INTEGRATION_HARNESS)
tests_integration_zero_length_requests_are_no_ops_CFLAGS = \
	$(TESTS_LIBNBD_CFLAGS)
tests_integration_zero_length_requests_are_no_ops_LDADD = \
	$(TESTS_LIBNBD_LIBS)

tests_integration_misbehaving_clients_do_not_disturb_others_SOURCES = \
	tests/integration/misbehaving-clients-do-not-disturb-others.c \
	$(INTEGRATION_HARNESS)
tests_integration_misbehaving_clients_do_not_disturb_others_CFLAGS = \
	$(TESTS_LIBNBD_CFLAGS)
tests_integration_misbehaving_clients_do_not_disturb_others_LDADD = \
	$(TESTS_LIBNBD_LIBS)

tests_integration_config_serves_several_exports_SOURCES = \
	tests/integration/config-serves-several-exports.c \
	$(INTEGRATION_HARNESS)
tests_integration_config_serves_several_exports_CFLAGS = \
	$(TESTS_LIBNBD_CFLAGS)
tests_integration_config_serves_several_exports_LDADD = \
	$(TESTS_LIBNBD_LIBS)

tests_integration_sigterm_keeps_acknowledged_writes_SOURCES = \
	tests/integration/sigterm-keeps-acknowledged-writes.c \
	$(INTEGRATION_HARNESS)
tests_integration_sigterm_keeps_acknowledged_writes_CFLAGS = \
	$(TESTS_LIBNBD_CFLAGS)
tests_integration_sigterm_keeps_acknowledged_writes_LDADD = \
	$(TESTS_LIBNBD_LIBS)

tests_integration_shared_limit_queues_extra_clients_SOURCES = \
	tests/integration/shared-limit-queues-extra-clients.c \
	$(INTEGRATION_HARNESS)
tests_integration_shared_limit_queues_extra_clients_CFLAGS = \
	$(TESTS_LIBNBD_CFLAGS)
tests_integration_shared_limit_queues_extra_clients_LDADD = \
	$(TESTS_LIBNBD_LIBS)

endif
