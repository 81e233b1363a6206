# syntax=docker/dockerfile:1
ARG GO_VERSION=1.22
FROM golang:${GO_VERSION}-alpine AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION
RUN go build -ldflags "-X main.version=${VERSION}" -o /out/app ./cmd/app

FROM alpine:3.20 AS runtime
RUN apk add --no-cache ca-certificates
COPY --from=build /out/app /usr/local/bin/app
USER 65534
ENTRYPOINT ["app"]
