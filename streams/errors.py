"""The project's exception hierarchy, one root for everything it raises.

PipelineError
├── ConfigError        bad settings or an unreadable/invalid configuration file
├── PolicyError        invalid policy file or schema annotations (a ConfigError)
├── BrokerError        the Kafka broker cannot be started, reached or administered
├── ClickHouseError    the ClickHouse engine or server cannot be reached or refuses work
├── SerializationError bytes that do not decode, or records that do not encode
└── RequestError       a data-subject request that is malformed or fails verification

Third-party errors are re-raised at the edge as the most specific of these
(``raise BrokerError(...) from exc``) so the CLI can print one clear line.
Subpackages (``sinks``) subclass these; they add no second root.
"""


class PipelineError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(PipelineError):
    """A setting or configuration file is missing, malformed or out of range."""


class PolicyError(ConfigError):
    """The policy file or a schema's privacy annotations are invalid."""


class BrokerError(PipelineError):
    """The Kafka broker cannot be started, reached or administered."""


class ClickHouseError(PipelineError):
    """The ClickHouse engine or server cannot be reached or refused the work."""


class SerializationError(PipelineError):
    """Bytes that do not decode with their schema, or a record that does not encode."""


class RequestError(PipelineError):
    """A data-subject request is malformed or fails verification."""
