# latchkey in a container: a static binary on a distroless base, run as a
# non-root user, its state in the /var/lib/latchkey volume.
#
#   docker build -t latchkey .
#   docker run -d --name latchkey -p 25:2525 -p 587:2587 \
#     -v latchkey-data:/var/lib/latchkey -v /etc/latchkey:/etc/latchkey:ro latchkey
#
# /etc/latchkey/latchkey.toml must set data_dir = "/var/lib/latchkey" and
# listen on ports above 1024 (the user has no privilege to bind 25): publish
# them as 25 and 587 with -p as above. See docs/operations.md.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static (no cgo), so it runs on a base image without libc.
RUN CGO_ENABLED=0 go build -trimpath -o /out/ ./cmd/...
# The state directory, owned by the image's non-root user (65532) so that a
# new named volume mounted there is writable by it.
RUN mkdir -m 700 /state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/latchkey /out/latchkey-load /usr/local/bin/
COPY --from=build --chown=65532:65532 /state /var/lib/latchkey
USER nonroot:nonroot
VOLUME /var/lib/latchkey
WORKDIR /var/lib/latchkey
EXPOSE 2525 2587
ENTRYPOINT ["/usr/local/bin/latchkey"]
CMD ["serve", "-config", "/etc/latchkey/latchkey.toml"]
