#!/bin/bash
# healthcheck.sh — the images' HEALTHCHECK: GET /healthz on the port of
# E2GAN_LISTEN (default 8080) with bash's /dev/tcp, so the image needs no
# curl.  Exit 0 on "200", 1 otherwise (or after 5 s).
listen=${E2GAN_LISTEN:-0.0.0.0:8080}
port=${listen##*:}
host=127.0.0.1
[ "${listen:0:1}" = "[" ] && host=::1
exec 3<>"/dev/tcp/$host/$port" || exit 1
printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
read -r -t 5 status_line <&3 || exit 1
[[ $status_line == "HTTP/1."?" 200 "* ]]
