FROM scratch AS files
COPY --link --chmod=755 bin/ /bin/

FROM debian:bookworm AS test
COPY --from=files /bin /usr/local/bin
RUN --network=none run-tests

FROM files
LABEL version=$VERSION
ARG VERSION
LABEL version=$VERSION
