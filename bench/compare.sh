#!/usr/bin/env bash
# bench/compare.sh — latchkey against Postfix + OpenDKIM, side by side, on this
# machine, with the same workload and the same load tool (cmd/latchkey-load).
#
#   bench/compare.sh [--install] [--runs 3] [--n 10000] [--conns 8]
#                    [--rates "20 150"] [--rate-seconds 30] [--workdir DIR]
#                    [--only latchkey|postfix] [--keep-postfix] [--verify-every 10]
#
# LATCHKEY_TAGS=openssl builds the relay with RSA signing through OpenSSL's
# libcrypto (needs cgo and libssl-dev; see README).
#
# Workload (issue 9): ~4 KB text+HTML reset-like messages submitted over
# STARTTLS + AUTH PLAIN from --conns kept-open connections, DKIM rsa-sha256
# 2048-bit, durably queued, delivered over SMTP+STARTTLS to a loopback MX (the
# tool's sink on 127.0.0.2) that records arrival and verifies the signature.
# Each relay runs --runs times, alternately; the script prints the medians and
# the latchkey/Postfix ratios, and leaves every JSON report under WORKDIR/results.
#
# Not part of CI. Run it as root on a throwaway machine: --install runs
# apt-get (postfix, opendkim, sasl2-bin) with the debconf answer "No
# configuration", so an installed system Postfix is neither configured nor
# started by it. The Postfix used here is a separate instance: its own
# config_directory, queue_directory and data_directory under WORKDIR, started
# with `postfix -c`, listening on 127.0.0.1 only; /etc/postfix is never read
# for settings or written. OpenDKIM runs from its own config file under WORKDIR,
# reached by Postfix through a unix socket (milter).
#
# The machine must be otherwise idle: the figures are CPU-bound.
set -euo pipefail

INSTALL=0
RUNS=3
N=10000
CONNS=8
RATES="20 150"
RATE_SECONDS=30
WORK=/tmp/latchkey-compare
ONLY=""
KEEP_POSTFIX=0
# The sink verifies the DKIM signature of every VERIFY-th arrival: verifying
# all would take CPU from the relays under test on a 2-core machine.
VERIFY=10
PF_SUBMIT=127.0.0.1:10587
MX=127.0.0.2:2526

while [ $# -gt 0 ]; do
	case "$1" in
	--install) INSTALL=1 ;;
	--runs) RUNS=$2; shift ;;
	--n) N=$2; shift ;;
	--conns) CONNS=$2; shift ;;
	--rates) RATES=$2; shift ;;
	--rate-seconds) RATE_SECONDS=$2; shift ;;
	--workdir) WORK=$2; shift ;;
	--only) ONLY=$2; shift ;;
	--keep-postfix) KEEP_POSTFIX=1 ;;
	--verify-every) VERIFY=$2; shift ;;
	-h|--help) sed -n '2,28p' "$0"; exit 0 ;;
	*) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
	esac
	shift
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$WORK/bin" "$WORK/results"
chmod 755 "$WORK"
log() { printf '%s compare.sh: %s\n' "$(date +%T)" "$*" >&2; }

want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }

# ---------------------------------------------------------------- install
if [ "$INSTALL" = 1 ]; then
	[ "$(id -u)" = 0 ] || { echo "compare.sh: --install needs root" >&2; exit 1; }
	log "installing postfix, opendkim and sasl2-bin from Debian"
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		postfix opendkim sasl2-bin libsasl2-modules openssl >/dev/null
fi

# ---------------------------------------------------------------- build
log "building latchkey and latchkey-load"
(cd "$REPO" && go build ${LATCHKEY_TAGS:+-tags "$LATCHKEY_TAGS"} -o "$WORK/bin/latchkey" ./cmd/latchkey && go build -o "$WORK/bin/latchkey-load" ./cmd/latchkey-load)
LOAD="$WORK/bin/latchkey-load"

# ---------------------------------------------------------------- postfix
PF="$WORK/postfix"
PFPID=""
postfix_up() {
	command -v postfix >/dev/null && command -v opendkim >/dev/null && command -v saslpasswd2 >/dev/null || {
		echo "compare.sh: postfix, opendkim or saslpasswd2 missing; run with --install on a throwaway machine" >&2
		return 1
	}
	id postfix >/dev/null 2>&1 || { echo "compare.sh: no postfix user (is the package installed?)" >&2; return 1; }
	postfix_down 2>/dev/null || true
	rm -rf "$PF"
	mkdir -p "$PF/etc/sasl" "$PF/spool" "$PF/data" "$PF/dkim" "$PF/sasl" "$PF/run"
	chmod 755 "$PF" "$PF/etc" "$PF/etc/sasl" "$PF/sasl"

	# TLS certificate for the submission listener (self-signed; the load tool
	# does not verify it, like the latchkey trial certificate).
	openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=postfix.test" \
		-keyout "$PF/etc/tls.key" -out "$PF/etc/tls.crt" 2>/dev/null

	# DKIM key, rsa-2048, and its public record for the sink's verifier.
	openssl genrsa -out "$PF/dkim/pf.private" 2048 2>/dev/null
	PF_DKIM="pf._domainkey.example.com=v=DKIM1; k=rsa; p=$(openssl rsa -in "$PF/dkim/pf.private" -pubout -outform DER 2>/dev/null | base64 -w0)"
	chown -R postfix:postfix "$PF/dkim" "$PF/run" "$PF/data"
	chmod 700 "$PF/dkim"
	chmod 600 "$PF/dkim/pf.private"
	cat >"$PF/opendkim.conf" <<-EOF
		Syslog                  no
		Mode                    s
		Domain                  example.com
		Selector                pf
		KeyFile                 $PF/dkim/pf.private
		Canonicalization        relaxed/relaxed
		SignatureAlgorithm      rsa-sha256
		Socket                  local:$PF/run/opendkim.sock
		UMask                   007
		UserID                  postfix:postfix
		PidFile                 $PF/run/opendkim.pid
		InternalHosts           127.0.0.0/8
		RequireSafeKeys         no
		Background              yes
	EOF

	# SASL: Cyrus with a private sasldb; the user is load@postfix.test.
	PF_PASS=$(openssl rand -hex 16)
	echo "$PF_PASS" >"$PF/password"
	echo "$PF_PASS" | saslpasswd2 -p -f "$PF/sasl/sasldb2" -c -u postfix.test load
	chown postfix:postfix "$PF/sasl/sasldb2"
	chmod 600 "$PF/sasl/sasldb2"
	# Debian's Cyrus build looks for $config_directory/sasl/smtpd.conf.
	cat >"$PF/etc/sasl/smtpd.conf" <<-EOF
		pwcheck_method: auxprop
		auxprop_plugin: sasldb
		sasldb_path: $PF/sasl/sasldb2
		mech_list: PLAIN LOGIN
	EOF

	cat >"$PF/etc/main.cf" <<-EOF
		# Written by latchkey's bench/compare.sh: a loopback-only instance.
		compatibility_level = 3.6
		config_directory = $PF/etc
		queue_directory = $PF/spool
		data_directory = $PF/data
		mail_owner = postfix
		setgid_group = postdrop
		maillog_file_prefixes = $PF
		maillog_file = $PF/postfix.log
		myhostname = postfix.test
		mydomain = postfix.test
		myorigin = postfix.test
		mydestination =
		relay_domains =
		local_recipient_maps =
		inet_interfaces = 127.0.0.1
		inet_protocols = ipv4
		mynetworks = 127.0.0.1/32
		alias_maps =
		alias_database =
		biff = no
		# Everything goes to the tool's sink, the MX of dest.test, over STARTTLS.
		relayhost = [${MX%:*}]:${MX#*:}
		smtp_tls_security_level = may
		smtp_dns_support_level = disabled
		# Submission: TLS, then AUTH, then relay for authenticated clients only.
		smtpd_tls_cert_file = $PF/etc/tls.crt
		smtpd_tls_key_file = $PF/etc/tls.key
		smtpd_tls_security_level = may
		smtpd_sasl_type = cyrus
		smtpd_sasl_path = smtpd
		cyrus_sasl_config_path = $PF/etc/sasl
		smtpd_sasl_local_domain = postfix.test
		smtpd_relay_restrictions = permit_sasl_authenticated, reject
		smtpd_recipient_restrictions = permit_sasl_authenticated, reject
		# DKIM: OpenDKIM signs every message before the 250.
		smtpd_milters = unix:$PF/run/opendkim.sock
		non_smtpd_milters = \$smtpd_milters
		milter_default_action = tempfail
		milter_protocol = 6
		# Enough parallelism for 8 clients, like latchkey's defaults.
		default_process_limit = 100
		default_destination_concurrency_limit = 20
	EOF
	# The distribution's master.cf (chroot off by default since Postfix 3.0),
	# plus the submission listener and the log daemon.
	cp /usr/share/postfix/master.cf.dist "$PF/etc/master.cf"
	cat >>"$PF/etc/master.cf" <<-EOF
		$PF_SUBMIT inet n - n - - smtpd
		  -o syslog_name=postfix/submission
		  -o smtpd_tls_security_level=encrypt
		  -o smtpd_sasl_auth_enable=yes
		  -o smtpd_tls_auth_only=yes
		postlog   unix-dgram n  -       n       -       1       postlogd
	EOF
	sed -i 's/^smtp      inet/#smtp      inet/' "$PF/etc/master.cf"

	opendkim -x "$PF/opendkim.conf"
	for _ in $(seq 50); do [ -S "$PF/run/opendkim.sock" ] && break; sleep 0.1; done
	[ -S "$PF/run/opendkim.sock" ] || { echo "compare.sh: opendkim did not start" >&2; return 1; }
	postfix -c "$PF/etc" set-permissions >/dev/null 2>&1 || true
	postfix -c "$PF/etc" check || { script -qc "postfix -c $PF/etc check" /dev/null; return 1; }
	postfix -c "$PF/etc" start
	for _ in $(seq 50); do [ -s "$PF/spool/pid/master.pid" ] && break; sleep 0.1; done
	PFPID=$(tr -d ' ' <"$PF/spool/pid/master.pid")
	log "postfix instance up (master pid $PFPID) on $PF_SUBMIT, opendkim on $PF/run/opendkim.sock"
}

postfix_down() {
	postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
	if [ -s "$PF/run/opendkim.pid" ]; then
		local pid
		pid=$(cat "$PF/run/opendkim.pid")
		kill "$pid" 2>/dev/null || true
		# Wait: an exiting opendkim unlinks its socket path, which the next
		# instance may already be listening on.
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	fi
}

# ---------------------------------------------------------------- runs
# scenario NAME ARGS...: the load flags of one scenario.
SCENARIOS=("closed" )
for r in $RATES; do SCENARIOS+=("rate$r"); done
scenario_args() {
	case "$1" in
	closed) echo "-conns $CONNS -n $N" ;;
	rate*) local r=${1#rate}; echo "-conns $CONNS -rate $r -n $((r * RATE_SECONDS))" ;;
	esac
}

run_latchkey() { # scenario run
	# shellcheck disable=SC2046
	"$LOAD" run -json -label "latchkey $1 #$2" -latchkey "$WORK/bin/latchkey" -dkim rsa -verify-every "$VERIFY" \
		$(scenario_args "$1") >"$WORK/results/latchkey-$1-$2.json" || log "latchkey $1 #$2: the run reported failures"
}

run_postfix() { # scenario run
	# shellcheck disable=SC2046
	"$LOAD" run -json -label "postfix $1 #$2" -addr "$PF_SUBMIT" -user load -pass-file "$PF/password" \
		-mx-listen "$MX" -dkim-record "$PF_DKIM" -verify-every "$VERIFY" \
		$(scenario_args "$1") >"$WORK/results/postfix-$1-$2.json" || log "postfix $1 #$2: the run reported failures"
}

if want postfix; then
	postfix_up
	trap '[ "$KEEP_POSTFIX" = 1 ] || postfix_down' EXIT
fi

for i in $(seq "$RUNS"); do
	for s in "${SCENARIOS[@]}"; do
		if want latchkey; then log "latchkey $s run $i"; run_latchkey "$s" "$i"; fi
		if want postfix; then log "postfix $s run $i"; run_postfix "$s" "$i"; fi
	done
done

# ---------------------------------------------------------------- summary
python3 - "$WORK/results" <<'EOF'
import glob, json, os, statistics, sys
d = sys.argv[1]
rows = {}
for f in sorted(glob.glob(os.path.join(d, "*.json"))):
    relay, scen, _ = os.path.basename(f)[:-5].split("-")
    try:
        r = json.load(open(f))
    except ValueError:
        continue
    rows.setdefault((relay, scen), []).append(r)

def med(rs, f):
    v = [f(r) for r in rs]
    return statistics.median(v) if v else float("nan")

def fig(relay, scen):
    rs = rows.get((relay, scen), [])
    if not rs:
        return None
    return {
        "n": len(rs),
        "e2e": med(rs, lambda r: r["e2e_msg_per_sec"]),
        "p50": med(rs, lambda r: r["sink"]["e2e_latency"]["p50_ms"]),
        "p99": med(rs, lambda r: r["sink"]["e2e_latency"]["p99_ms"]),
        "cpu": med(rs, lambda r: r["relay"]["machine_cpu_per_msg_ms"]),
        "dkimfail": sum(r["sink"]["dkim_failures"] for r in rs),
        "lost": sum(r["send"]["accepted"] - r["sink"]["e2e_latency"]["n"] for r in rs),
    }

scens = sorted({s for _, s in rows}, key=lambda s: (s != "closed", int(s[4:]) if s.startswith("rate") else 0))
print("\nmedians of the runs (machine CPU per message excludes the load tool):\n")
print("| relay | scenario | runs | e2e msg/s | e2e p50 ms | e2e p99 ms | CPU ms/msg | DKIM fail | lost |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for s in scens:
    for relay in ("postfix", "latchkey"):
        f = fig(relay, s)
        if f:
            print(f"| {relay} | {s} | {f['n']} | {f['e2e']:.0f} | {f['p50']:.1f} | {f['p99']:.1f} | {f['cpu']:.2f} | {f['dkimfail']} | {f['lost']} |")
print()
for s in scens:
    l, p = fig("latchkey", s), fig("postfix", s)
    if l and p:
        if s == "closed":
            print(f"closed loop: latchkey/postfix throughput = {l['e2e'] / p['e2e']:.2f}x; CPU per message = {l['cpu'] / p['cpu']:.2f}x")
        else:
            print(f"{s}: p50 postfix/latchkey = {p['p50'] / l['p50']:.1f}x, p99 = {p['p99'] / l['p99']:.1f}x")
EOF
