FROM busybox
ENV GREETING=hello
COPY <<EOF /etc/greeting
$GREETING world
EOF
RUN <<EOT
set -e
echo "$GREETING" > /out
EOT
CMD ["cat", "/etc/greeting"]
