# The base of the onbuild case: its ONBUILD triggers run in the build of ./Dockerfile, which
# the differential tests compare with docker + BuildKit (builder/tests/differential.rs).
FROM busybox
RUN mkdir /parent && echo parent > /parent/marker
LABEL role=parent
ONBUILD WORKDIR /from-trigger
ONBUILD COPY trigger-input.txt ./
ONBUILD ENV TRIGGERED=yes
ONBUILD RUN echo "trigger ran in $(pwd) with TRIGGERED=$TRIGGERED" > /parent/trigger.txt
CMD ["cat", "/parent/trigger.txt"]
