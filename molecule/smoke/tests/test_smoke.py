def test_marker(host):
    assert host.file("/etc/rk-smoke").content_string == "ok\n"
    assert host.service("ssh").is_running
