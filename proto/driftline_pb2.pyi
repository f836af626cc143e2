from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class VersionInfoRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class VersionInfoResponse(_message.Message):
    __slots__ = ("name", "version", "feature_names", "execution_providers", "metadata_json", "registry", "profile_json", "device_path")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    REGISTRY_FIELD_NUMBER: _ClassVar[int]
    PROFILE_JSON_FIELD_NUMBER: _ClassVar[int]
    DEVICE_PATH_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    execution_providers: _containers.RepeatedScalarFieldContainer[str]
    metadata_json: str
    registry: str
    profile_json: str
    device_path: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., feature_names: _Optional[_Iterable[str]] = ..., execution_providers: _Optional[_Iterable[str]] = ..., metadata_json: _Optional[str] = ..., registry: _Optional[str] = ..., profile_json: _Optional[str] = ..., device_path: _Optional[str] = ...) -> None: ...

class DriftRequest(_message.Message):
    __slots__ = ("name", "version", "fleet")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FLEET_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    fleet: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., fleet: bool = ...) -> None: ...

class ColumnDrift(_message.Message):
    __slots__ = ("name", "kind", "rows", "psi", "js", "ks", "wasserstein", "mean_shift", "chi2", "alarm", "alarms", "source", "p_value", "p_adjusted", "note", "discrete")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    JS_FIELD_NUMBER: _ClassVar[int]
    KS_FIELD_NUMBER: _ClassVar[int]
    WASSERSTEIN_FIELD_NUMBER: _ClassVar[int]
    MEAN_SHIFT_FIELD_NUMBER: _ClassVar[int]
    CHI2_FIELD_NUMBER: _ClassVar[int]
    ALARM_FIELD_NUMBER: _ClassVar[int]
    ALARMS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    P_ADJUSTED_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    DISCRETE_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    rows: int
    psi: float
    js: float
    ks: float
    wasserstein: float
    mean_shift: float
    chi2: float
    alarm: bool
    alarms: _containers.RepeatedScalarFieldContainer[str]
    source: str
    p_value: float
    p_adjusted: float
    note: str
    discrete: bool
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., rows: _Optional[int] = ..., psi: _Optional[float] = ..., js: _Optional[float] = ..., ks: _Optional[float] = ..., wasserstein: _Optional[float] = ..., mean_shift: _Optional[float] = ..., chi2: _Optional[float] = ..., alarm: bool = ..., alarms: _Optional[_Iterable[str]] = ..., source: _Optional[str] = ..., p_value: _Optional[float] = ..., p_adjusted: _Optional[float] = ..., note: _Optional[str] = ..., discrete: bool = ...) -> None: ...

class DriftSection(_message.Message):
    __slots__ = ("rows", "alarm", "features", "outputs", "attribution")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ALARM_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    rows: int
    alarm: bool
    features: _containers.RepeatedCompositeFieldContainer[ColumnDrift]
    outputs: _containers.RepeatedCompositeFieldContainer[ColumnDrift]
    attribution: _containers.RepeatedCompositeFieldContainer[ColumnDrift]
    def __init__(self, rows: _Optional[int] = ..., alarm: bool = ..., features: _Optional[_Iterable[_Union[ColumnDrift, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[ColumnDrift, _Mapping]]] = ..., attribution: _Optional[_Iterable[_Union[ColumnDrift, _Mapping]]] = ...) -> None: ...

class DriftReportResponse(_message.Message):
    __slots__ = ("name", "version", "window", "current", "since_live", "thresholds_json", "validation_json", "attribution_flags_json", "fleet_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    SINCE_LIVE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_JSON_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_FLAGS_JSON_FIELD_NUMBER: _ClassVar[int]
    FLEET_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    window: str
    current: DriftSection
    since_live: DriftSection
    thresholds_json: str
    validation_json: str
    attribution_flags_json: str
    fleet_json: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., window: _Optional[str] = ..., current: _Optional[_Union[DriftSection, _Mapping]] = ..., since_live: _Optional[_Union[DriftSection, _Mapping]] = ..., thresholds_json: _Optional[str] = ..., validation_json: _Optional[str] = ..., attribution_flags_json: _Optional[str] = ..., fleet_json: _Optional[str] = ...) -> None: ...

class DriftStatesResponse(_message.Message):
    __slots__ = ("window_state_json", "total_state_json", "validation_json", "attribution_flags_json")
    WINDOW_STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTION_FLAGS_JSON_FIELD_NUMBER: _ClassVar[int]
    window_state_json: str
    total_state_json: str
    validation_json: str
    attribution_flags_json: str
    def __init__(self, window_state_json: _Optional[str] = ..., total_state_json: _Optional[str] = ..., validation_json: _Optional[str] = ..., attribution_flags_json: _Optional[str] = ...) -> None: ...

class SwapRequest(_message.Message):
    __slots__ = ("name", "version", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., force: bool = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class SwapResponse(_message.Message):
    __slots__ = ("name", "previous_version", "version", "workers", "seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    previous_version: str
    version: str
    workers: int
    seconds: float
    def __init__(self, name: _Optional[str] = ..., previous_version: _Optional[str] = ..., version: _Optional[str] = ..., workers: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...
