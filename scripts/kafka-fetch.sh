#!/usr/bin/env bash
# Provisions what the real Kafka broker needs on a fresh machine (Java 17 and Maven from Debian,
# then the org.apache.kafka:kafka_2.13 jars from Maven Central into .ocdn/kafka-libs or
# $OCDN_KAFKA_LIBS), so the telemetry tests and "ocdn kafka up" start without a download.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
if ((${#need[@]})); then
  echo "== installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

node bin/ocdn.js kafka fetch
