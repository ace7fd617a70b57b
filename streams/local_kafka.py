"""A local single-node Apache Kafka in KRaft mode (combined broker and controller).

The broker runs from ``KAFKA_HOME/libs`` when the user has an install, otherwise from
jars Maven resolves out of Maven Central into the cache directory. Data, logs and the
pid file live under the state directory, never in the repository.
"""

from __future__ import annotations

import base64
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException

from streams import kafka_clients
from streams.errors import BrokerError

READY_TIMEOUT_S = 60.0
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.privacy-pipeline</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId>
      <version>1.7.36</version></dependency>
  </dependencies>
</project>
"""
_LOG4J = """log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={log}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.log.LogCleaner=INFO
log4j.logger.org.apache.kafka=WARN
log4j.logger.kafka=INFO
"""


def resolve_jars(cache: Path, version: str, kafka_home: Path | None = None) -> Path:
    """Directory of broker jars: ``KAFKA_HOME/libs`` or a Maven-resolved cache."""
    if kafka_home is not None:
        libs = kafka_home / "libs"
        if not any(libs.glob("kafka_2.*.jar")):
            raise BrokerError(f"KAFKA_HOME={kafka_home} has no libs/kafka_2.*.jar")
        return libs
    target = cache / f"kafka-{version}"
    libs = target / "libs"
    if (target / ".complete").exists():
        return libs
    if shutil.which("mvn") is None:
        raise BrokerError("Maven (mvn) is needed to fetch the Kafka jars; install it or set "
                          "KAFKA_HOME to an Apache Kafka install")
    target.mkdir(parents=True, exist_ok=True)
    (target / "pom.xml").write_text(_POM.format(version=version))
    proc = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(target / "pom.xml"), "dependency:copy-dependencies",
         f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
        capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["(no output)"]
        raise BrokerError(f"Maven could not resolve org.apache.kafka:kafka_2.13:{version}: "
                          f"{last[0]}")
    (target / ".complete").touch()
    return libs


def free_port_pair() -> int:
    """A port p such that p and p+1 are both free (client and controller listeners)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise BrokerError("no two adjacent free ports for a local broker")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # Linux PR_SET_PDEATHSIG: the broker gets SIGTERM if the process that owns it dies.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class LocalKafka:
    """One local broker: its directories, ports and process."""

    home: Path  # data, logs and pid file
    libs: Path
    port: int

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "server.log"

    def _properties(self) -> Path:
        data = self.home / "data"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@localhost:{self.port + 1}",
            "listeners": (f"PLAINTEXT://localhost:{self.port},"
                          f"CONTROLLER://localhost:{self.port + 1}"),
            "advertised.listeners": f"PLAINTEXT://localhost:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            # Locally the cleaner wakes up often, so compaction is observable in tests.
            "log.cleaner.backoff.ms": "500",
            "log.retention.check.interval.ms": "5000",
        }
        path = self.home / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.home / "log4j.properties").write_text(_LOG4J.format(log=self.log_file))
        return path

    def _java(self, main: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("Java 17+ is needed to run the local Kafka broker (java not found)")
        # C1 only: the local broker shares a small machine with the pipeline, and the C2
        # compiler kept taking seconds of a core per drain even after thousands of compiles
        # (D15); with C1 the worker drained 46-52k msg/s against 31-32k, the pass-through
        # 125-128k against 102-121k (D18). A production cluster runs elsewhere.
        return [java, "-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true",
                f"-Dlog4j.configuration=file:{self.home / 'log4j.properties'}",
                f"-Dkafka.logs.dir={self.log_file.parent}",
                "-cp", f"{self.libs}/*", main, *args]

    def pid(self) -> int | None:
        """The broker's pid if it is running, else None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def start(self, *, owned: bool = False, timeout: float = READY_TIMEOUT_S) -> None:
        """Start the broker (if not running) and wait until it answers a metadata request.

        ``owned`` ties the broker's life to this process (test sessions); otherwise it runs
        on after the command that started it, until ``stop``.
        """
        if self.pid() is not None:
            self.wait_ready(timeout)
            return
        for port in (self.port, self.port + 1):
            if not _port_free(port):
                raise BrokerError(f"port {port} is taken by another process (another broker?); "
                                  "stop it or set PRIVACY_PIPELINE_KAFKA_PORT")
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        props = self._properties()
        if not (self.home / "data" / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            fmt = subprocess.run(
                self._java("kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                           "-c", str(props)), capture_output=True, text=True, check=False)
            if fmt.returncode != 0:
                raise BrokerError(f"formatting the KRaft storage failed: "
                                  f"{(fmt.stderr or fmt.stdout).strip()[-300:]}")
        with open(self.home / "logs" / "stdout.log", "ab") as out:
            proc = subprocess.Popen(
                self._java("kafka.Kafka", str(props)), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=_die_with_parent if owned else None)
        self.pid_file.write_text(str(proc.pid))
        try:
            self.wait_ready(timeout, proc)
        except BrokerError:
            self.stop()
            raise

    def wait_ready(self, timeout: float = READY_TIMEOUT_S,
                   proc: subprocess.Popen[bytes] | None = None) -> None:
        admin = kafka_clients.admin(self.bootstrap, **{"socket.connection.setup.timeout.ms": 1000})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise BrokerError(f"the local broker exited with {proc.returncode}; see "
                                  f"{self.log_file}")
            try:
                md = admin.list_topics(timeout=1.0)
                if md.brokers:
                    return
            except KafkaException:
                pass
            time.sleep(0.2)  # polling the broker for readiness, bounded by the deadline
        raise BrokerError(f"the local broker did not answer within {timeout:.0f}s; see "
                          f"{self.log_file}")

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker; True if one was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child, so a zombie does not count as alive.
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
