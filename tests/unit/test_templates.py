"""Rendered config files: the values land where they should. (nginx -t and systemd-analyze verify run
against these on a real server in tests/integration.)"""

from pathlib import Path

import pytest

from tasks.inventory import parse
from tasks.provisioning import Server, firewall, gunicorn, nginx, ssh, tls
from tasks.commands.render import render


def server(domains=("app.test", "www.app.test"), port=22, **acme):
    inv = parse({"app": {"name": "mysite", "domains": list(domains)},
                 "hosts": [{"address": "10.0.0.2", "port": port}], "acme": acme}, "x", Path("."))
    return Server(inv, inv.hosts[0], ("ssh-ed25519 AAAA me",), lambda: None)


def test_nginx_with_tls_redirects_http_and_sets_hsts_and_mozilla_intermediate():
    conf = nginx.site_config(server(), tls=True, nginx_version=(1, 26, 0))
    assert "return 301 https://$host$request_uri;" in conf
    assert "Strict-Transport-Security" in conf and "ssl_protocols TLSv1.2 TLSv1.3;" in conf
    assert "server_name app.test www.app.test;" in conf and "http2 on;" in conf
    assert "/.well-known/acme-challenge/" in conf
    assert "include /etc/gangway/mysite/backend.conf;" in conf
    assert "alias /srv/mysite/static/;" in conf and "alias /srv/mysite/shared/media/;" in conf


def test_nginx_before_the_certificate_serves_http_and_no_tls():
    conf = nginx.site_config(server(), tls=False, nginx_version=(1, 26, 0))
    assert "ssl_certificate" not in conf and "return 301" not in conf
    assert "add_header Strict-Transport-Security" not in conf
    assert "include /etc/gangway/mysite/backend.conf;" in conf


def test_nginx_older_than_1_25_gets_http2_on_the_listen_line():
    conf = nginx.site_config(server(), tls=True, nginx_version=(1, 22, 1))
    assert "listen 443 ssl http2;" in conf and "http2 on;" not in conf


def test_nginx_without_domains_answers_any_name_and_with_domains_leaves_room_for_other_sites():
    conf = nginx.site_config(server(domains=()), tls=False, nginx_version=(1, 26, 0))
    assert "server_name _;" in conf and "listen 80 default_server;" in conf
    assert "default_server" not in nginx.site_config(server(), tls=True, nginx_version=(1, 26, 0))


def test_gunicorn_unit_runs_the_release_as_the_app_user_sandboxed():
    unit = gunicorn.unit_file(server())
    assert "User=mysite" in unit and "WorkingDirectory=/srv/mysite/releases/%i" in unit
    assert "ExecStart=/srv/mysite/releases/%i/.venv/bin/gunicorn --config /etc/gangway/mysite/gunicorn.conf.py " \
           "mysite.wsgi:application" in unit
    assert "RuntimeDirectory=mysite/%i" in unit and "ProtectSystem=strict" in unit
    assert "ReadWritePaths=/srv/mysite/shared/media" in unit and "Restart=on-failure" in unit


def test_gunicorn_config_is_valid_python_and_binds_the_runtime_socket():
    source = gunicorn.config_file(server())
    compile(source, "gunicorn.conf.py", "exec")
    namespace = {}
    import os
    os.environ["RUNTIME_DIRECTORY"] = "/run/mysite/r1"
    exec(source, namespace)
    assert namespace["bind"] == "unix:/run/mysite/r1/gunicorn.sock" and namespace["umask"] == 0o007


def test_firewall_opens_the_ssh_port_in_use_plus_web():
    rules = firewall.ruleset(2222)
    assert "tcp dport { 80, 443, 2222 } accept" in rules and "policy drop" in rules
    assert "tcp dport { 22, 80, 443 } accept" in firewall.ruleset(22)
    # Only gangway's table is replaced, atomically: fail2ban's bans and other tools' tables are kept.
    assert "flush ruleset" not in rules and "table inet filter\ndelete table inet filter\n" in rules


def test_ssh_hardening_turns_off_root_and_passwords():
    conf = ssh.sshd_config("deploy", frozenset(), {"ed25519": 256, "rsa": 3072})
    assert "PermitRootLogin no" in conf and "PasswordAuthentication no" in conf


def test_certbot_command_uses_the_directory_email_domains_and_reload_hook():
    cmd = tls.certbot_command(server(email="a@b.co", directory="https://ca.test/dir"), force=False)
    assert "--server https://ca.test/dir" in cmd and "--email a@b.co" in cmd
    assert "--domain app.test --domain www.app.test" in cmd and "'systemctl reload nginx'" in cmd
    assert "--force-renewal" not in cmd
    assert "--register-unsafely-without-email" in tls.certbot_command(server(), force=True)


def test_certificate_state_is_parsed_from_openssl_output():
    out = ("notAfter=Feb 22 10:00:00 2027 GMT\nX509v3 Subject Alternative Name: \n"
           "    DNS:app.test, DNS:www.app.test\nstate=fresh\nserver = https://ca.test/dir\n")
    state = tls.parse_certificate(out, 0)
    assert state.domains == {"app.test", "www.app.test"} and state.fresh and state.server == "https://ca.test/dir"
    assert tls.parse_certificate("", 1) is None


@pytest.mark.parametrize("domains, server_url, fresh, reason", [
    ({"app.test"}, "https://acme-v02.api.letsencrypt.org/directory", True, "domains changed"),
    ({"app.test", "www.app.test"}, "https://other/dir", True, "directory changed"),
    ({"app.test", "www.app.test"}, "https://acme-v02.api.letsencrypt.org/directory", False, "expires"),
])
def test_certificate_is_reissued_when_it_no_longer_matches(domains, server_url, fresh, reason):
    s = server()
    state = tls.CertificateState(frozenset(domains), "x", fresh, server_url)
    [change] = tls.certificate_changes(s)(state, {})
    assert reason in change.what and "--force-renewal" in change.commands[0]
    ok = tls.CertificateState(frozenset({"app.test", "www.app.test"}), "x", True, s.inventory.acme.directory)
    assert tls.certificate_changes(s)(ok, {}) == []


# --- hardening: sshd, nginx judges, kernel and login defaults -------------------------------------------------

OPENSSH_10 = frozenset({"mlkem768x25519-sha256", "sntrup761x25519-sha512@openssh.com", "curve25519-sha256",
                        "curve25519-sha256@libssh.org", "diffie-hellman-group16-sha512",
                        "diffie-hellman-group18-sha512", "ecdh-sha2-nistp256", "chacha20-poly1305@openssh.com",
                        "aes256-gcm@openssh.com", "aes128-gcm@openssh.com", "aes256-ctr", "aes192-ctr",
                        "aes128-ctr", "hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com"})
OPENSSH_9_2 = OPENSSH_10 - {"mlkem768x25519-sha256"}


def _directive(conf, name):
    return next(line.split(None, 1)[1] for line in conf.splitlines() if line.startswith(name + " "))


def test_sshd_offers_no_nist_curves_and_only_what_this_openssh_knows():
    new = ssh.sshd_config("deploy", OPENSSH_10, {"ed25519": 256, "rsa": 3072})
    old = ssh.sshd_config("deploy", OPENSSH_9_2, {"ed25519": 256, "rsa": 3072})
    assert _directive(new, "KexAlgorithms").startswith("mlkem768x25519-sha256,")
    assert "mlkem" not in old  # OpenSSH 9.2 (Debian 12) would refuse to start on it
    for conf in (new, old):
        assert "nistp" not in conf and "sha1" not in conf and "group-exchange" not in conf
        assert _directive(conf, "HostKeyAlgorithms") == "ssh-ed25519,rsa-sha2-512,rsa-sha2-256"
        assert "HostKey /etc/ssh/ssh_host_ecdsa_key" not in conf
        assert _directive(conf, "MACs") == "hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com"


def test_sshd_keeps_an_algorithm_paramiko_speaks_in_every_list():
    import paramiko
    conf = ssh.sshd_config("deploy", OPENSSH_9_2, {"ed25519": 256})
    for directive, ours in (("KexAlgorithms", paramiko.Transport._preferred_kex),
                            ("Ciphers", paramiko.Transport._preferred_ciphers),
                            ("MACs", paramiko.Transport._preferred_macs),
                            ("HostKeyAlgorithms", paramiko.Transport._preferred_keys)):
        assert set(_directive(conf, directive).split(",")) & set(ours), directive


def test_sshd_drops_a_small_rsa_host_key_and_limits_sessions_and_forwarding():
    conf = ssh.sshd_config("deploy", OPENSSH_10, {"ed25519": 256, "rsa": 2048})
    assert _directive(conf, "HostKeyAlgorithms") == "ssh-ed25519"
    assert "ssh_host_rsa_key" not in conf
    for line in ("MaxAuthTries 3", "AllowTcpForwarding no", "AllowAgentForwarding no", "LogLevel VERBOSE",
                 "AllowUsers deploy", "PermitRootLogin no", "PasswordAuthentication no", "Compression no"):
        assert line in conf.splitlines(), line
    assert int(_directive(conf, "MaxSessions")) >= 10  # fab opens several channels per connection
    # A dead client (and the deploy lock it holds) is dropped within about a minute.
    assert int(_directive(conf, "ClientAliveInterval")) * (int(_directive(conf, "ClientAliveCountMax")) + 1) <= 75


def test_sshd_fallback_keeps_the_login_rules_without_algorithm_choices():
    conf = ssh.sshd_config("deploy", frozenset(), {}, crypto=False)
    assert "PermitRootLogin no" in conf and "KexAlgorithms" not in conf and "HostKey" not in conf


def test_sshd_without_an_answer_leaves_out_only_ml_kem():
    assert ssh.supported(ssh.KEX, frozenset()) == [a for a in ssh.KEX if not a.startswith("mlkem")]
    assert ssh.parse_host_keys("ed25519 256\nrsa 3072\n", 0) == {"ed25519": 256, "rsa": 3072}


def test_nginx_tls_server_orders_ciphers_and_does_not_compress_app_pages():
    conf = nginx.site_config(server(), tls=True, nginx_version=(1, 26, 0))
    assert "ssl_prefer_server_ciphers on;" in conf
    proxied = conf[conf.index("\tlocation / {\n\t\tproxy_set_header"):]
    assert "gzip off;" in proxied[:proxied.index("\t}\n")]  # BREACH: nothing secret is compressed over TLS
    assert "gzip off;" not in nginx.site_config(server(), tls=False, nginx_version=(1, 26, 0))


def test_nginx_passes_the_peer_address_not_a_client_written_one():
    for tls_on in (True, False):
        conf = nginx.site_config(server(), tls=tls_on, nginx_version=(1, 26, 0))
        assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf
        assert "$proxy_add_x_forwarded_for" not in conf


@pytest.mark.parametrize("tls_on", [True, False])
def test_nginx_media_is_sandboxed_and_keeps_the_security_headers(tls_on):
    conf = nginx.site_config(server(), tls=tls_on, nginx_version=(1, 26, 0))
    media = conf[conf.index("location /media/ {"):]
    media = media[:media.index("\t}\n")]
    # add_header in a location replaces the server's: every header the server sends is repeated here.
    assert 'add_header Content-Security-Policy "sandbox" always;' in media
    assert "default_type application/octet-stream;" in media
    for header in ("X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"):
        assert f"add_header {header} " in media, header
    assert ("Strict-Transport-Security" in media) == tls_on


def test_nginx_catch_all_refuses_unknown_names_without_claiming_default_server():
    from tasks.provisioning import catch_all
    conf = catch_all.config((1, 26, 0))
    assert "return 444;" in conf and "ssl_reject_handshake on;" in conf
    directives = [line for line in conf.splitlines() if not line.startswith("#")]
    assert not [line for line in directives if "default_server" in line or "ssl_certificate" in line]
    assert "ssl_reject_handshake" not in catch_all.config((1, 18, 0))  # older nginx: port 80 only
    with_domains = catch_all.unknown_hosts(server())
    assert [op.path for op in with_domains.operations] == [catch_all.CATCH_ALL]
    # A site without domains answers every name itself (it is the default server): no catch-all then.
    without = catch_all.unknown_hosts(server(domains=()))
    assert type(without.operations[0]).__name__ == "Absent"


def test_kernel_settings_apply_only_where_the_server_may_set_them():
    from tasks.provisioning import hardening
    conf = hardening.sysctl_file()
    lines = [line for line in conf.splitlines() if line and not line.startswith("#")]
    assert lines and all(line.startswith("-") for line in lines)  # a container's read-only keys don't fail boot
    assert "-net.ipv4.conf.all.accept_redirects = 0" in lines and "-kernel.kptr_restrict = 2" in lines
    facts = {hardening.WRITABLE.key: hardening.parse_writable("w /proc/sys/net/ipv4/tcp_syncookies\nr /proc/sys/kernel/kptr_restrict\n", 0)}
    assert hardening._kernel_note(facts).startswith("1 of 2 kernel settings apply here (the other 1 are the container")


def test_login_defaults_forbid_core_dumps_and_close_idle_shells():
    profile = render("hardening/profile.sh.j2", minutes=15)
    assert "TMOUT=900" in profile and "readonly TMOUT" in profile and "ulimit -c 0" in profile
    limits = render("hardening/limits.conf.j2")
    assert "*\t-\tcore\t0" in limits
    assert "$nrconf{restart} = 'a';" in render("hardening/needrestart.conf.j2")
    jail = render("hardening/fail2ban.conf.j2", maxretry=10, bantime="10m", ssh_port=2222)
    assert "backend = systemd" in jail and "port = 2222" in jail and "maxretry = 10" in jail


def test_hostname_is_added_to_etc_hosts_once(tmp_path):
    import subprocess
    from tasks.provisioning import system
    assert system._hostname_changes({"name": "web-1", "listed": True, "missing": False}, {}) == []
    commands = system._hostname_changes({"name": "web-1", "listed": False, "missing": False}, {})[0].commands
    for before, after in (("127.0.0.1\tlocalhost\n127.0.1.1\told\n", "127.0.0.1\tlocalhost\n127.0.1.1\told web-1\n"),
                          ("127.0.0.1\tlocalhost\n", "127.0.0.1\tlocalhost\n127.0.1.1\tweb-1\n")):
        hosts = tmp_path / "hosts"
        hosts.write_text(before)
        script = " && ".join(commands).replace("/etc/hosts", str(hosts))
        subprocess.run(["sh", "-c", script], check=True)
        assert hosts.read_text() == after
        probe = system.HOSTNAME.command.replace("$(hostname)", "web-1").replace("/etc/hosts", str(hosts))
        out = subprocess.run(["sh", "-c", probe], capture_output=True, text=True)
        assert system.parse_hostname(out.stdout, out.returncode) == {"name": "web-1", "listed": True, "missing": False}


def test_a_server_without_etc_hosts_gets_one_with_localhost_and_its_name(tmp_path):
    import subprocess
    from tasks.provisioning import system
    hosts = tmp_path / "hosts"  # does not exist, as on a minimal container image
    probe = system.HOSTNAME.command.replace("$(hostname)", "web-1").replace("/etc/hosts", str(hosts))
    out = subprocess.run(["sh", "-c", probe], capture_output=True, text=True)
    assert out.stderr == ""  # no raw awk error
    state = system.parse_hostname(out.stdout, out.returncode)
    assert state == {"name": "web-1", "listed": False, "missing": True}
    changes = system._hostname_changes(state, {})
    assert [c.what for c in changes] == ["/etc/hosts created (localhost and web-1)"]
    owner = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    script = changes[0].commands[0].replace("/etc/hosts", str(hosts)).replace("root:root", f"{owner}:")
    subprocess.run(["sh", "-ec", script], check=True)
    lines = hosts.read_text().splitlines()
    assert "127.0.0.1\tlocalhost" in lines and "127.0.1.1\tweb-1" in lines
    assert any(line.startswith("::1 ") and "localhost" in line.split() for line in lines)
    assert oct(hosts.stat().st_mode & 0o777) == "0o644"
    out = subprocess.run(["sh", "-c", probe], capture_output=True, text=True)
    assert system.parse_hostname(out.stdout, out.returncode)["listed"]  # a second provision changes nothing


def test_gunicorn_unit_filters_system_calls_and_limits_resources():
    unit = gunicorn.unit_file(server())
    for line in ("SystemCallFilter=@system-service", "SystemCallErrorNumber=EPERM", "ProtectProc=invisible",
                 "ProcSubset=pid", "LimitCORE=0", "TasksMax=256", "MemoryMax=50%", "LimitNOFILE=8192"):
        assert line in unit.splitlines(), line
