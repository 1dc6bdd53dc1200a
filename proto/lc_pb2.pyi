from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FlowState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FLOW_CONTINUE: _ClassVar[FlowState]
    FLOW_SLOW: _ClassVar[FlowState]
    FLOW_PAUSE: _ClassVar[FlowState]
    FLOW_RESUME: _ClassVar[FlowState]
FLOW_CONTINUE: FlowState
FLOW_SLOW: FlowState
FLOW_PAUSE: FlowState
FLOW_RESUME: FlowState

class InterfaceRef(_message.Message):
    __slots__ = ("name", "linktype")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LINKTYPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    linktype: int
    def __init__(self, name: _Optional[str] = ..., linktype: _Optional[int] = ...) -> None: ...

class PacketMeta(_message.Message):
    __slots__ = ("index", "protocol", "session_id", "filter_ids", "sip", "dns", "tls", "http", "email")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FILTER_IDS_FIELD_NUMBER: _ClassVar[int]
    SIP_FIELD_NUMBER: _ClassVar[int]
    DNS_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    index: int
    protocol: str
    session_id: str
    filter_ids: _containers.RepeatedScalarFieldContainer[str]
    sip: SipSummary
    dns: DnsSummary
    tls: TlsSummary
    http: HttpSummary
    email: EmailSummary
    def __init__(self, index: _Optional[int] = ..., protocol: _Optional[str] = ..., session_id: _Optional[str] = ..., filter_ids: _Optional[_Iterable[str]] = ..., sip: _Optional[_Union[SipSummary, _Mapping]] = ..., dns: _Optional[_Union[DnsSummary, _Mapping]] = ..., tls: _Optional[_Union[TlsSummary, _Mapping]] = ..., http: _Optional[_Union[HttpSummary, _Mapping]] = ..., email: _Optional[_Union[EmailSummary, _Mapping]] = ...) -> None: ...

class SipSummary(_message.Message):
    __slots__ = ("method", "status", "cseq_method", "from_user", "to_user", "from_uri", "to_uri")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CSEQ_METHOD_FIELD_NUMBER: _ClassVar[int]
    FROM_USER_FIELD_NUMBER: _ClassVar[int]
    TO_USER_FIELD_NUMBER: _ClassVar[int]
    FROM_URI_FIELD_NUMBER: _ClassVar[int]
    TO_URI_FIELD_NUMBER: _ClassVar[int]
    method: str
    status: int
    cseq_method: str
    from_user: str
    to_user: str
    from_uri: str
    to_uri: str
    def __init__(self, method: _Optional[str] = ..., status: _Optional[int] = ..., cseq_method: _Optional[str] = ..., from_user: _Optional[str] = ..., to_user: _Optional[str] = ..., from_uri: _Optional[str] = ..., to_uri: _Optional[str] = ...) -> None: ...

class DnsSummary(_message.Message):
    __slots__ = ("id", "qname", "qtype", "rcode", "response", "answers", "rtt_ns", "tunnel_score")
    ID_FIELD_NUMBER: _ClassVar[int]
    QNAME_FIELD_NUMBER: _ClassVar[int]
    QTYPE_FIELD_NUMBER: _ClassVar[int]
    RCODE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    RTT_NS_FIELD_NUMBER: _ClassVar[int]
    TUNNEL_SCORE_FIELD_NUMBER: _ClassVar[int]
    id: int
    qname: str
    qtype: int
    rcode: int
    response: bool
    answers: _containers.RepeatedScalarFieldContainer[str]
    rtt_ns: int
    tunnel_score: float
    def __init__(self, id: _Optional[int] = ..., qname: _Optional[str] = ..., qtype: _Optional[int] = ..., rcode: _Optional[int] = ..., response: _Optional[bool] = ..., answers: _Optional[_Iterable[str]] = ..., rtt_ns: _Optional[int] = ..., tunnel_score: _Optional[float] = ...) -> None: ...

class TlsSummary(_message.Message):
    __slots__ = ("handshake", "server_name", "alpn", "client_version", "server_version", "ja3", "ja3s", "ja4", "ja4s", "cipher", "next_protocol", "quic")
    HANDSHAKE_FIELD_NUMBER: _ClassVar[int]
    SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    ALPN_FIELD_NUMBER: _ClassVar[int]
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    JA3_FIELD_NUMBER: _ClassVar[int]
    JA3S_FIELD_NUMBER: _ClassVar[int]
    JA4_FIELD_NUMBER: _ClassVar[int]
    JA4S_FIELD_NUMBER: _ClassVar[int]
    CIPHER_FIELD_NUMBER: _ClassVar[int]
    NEXT_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    QUIC_FIELD_NUMBER: _ClassVar[int]
    handshake: str
    server_name: str
    alpn: _containers.RepeatedScalarFieldContainer[str]
    client_version: int
    server_version: int
    ja3: str
    ja3s: str
    ja4: str
    ja4s: str
    cipher: int
    next_protocol: str
    quic: bool
    def __init__(self, handshake: _Optional[str] = ..., server_name: _Optional[str] = ..., alpn: _Optional[_Iterable[str]] = ..., client_version: _Optional[int] = ..., server_version: _Optional[int] = ..., ja3: _Optional[str] = ..., ja3s: _Optional[str] = ..., ja4: _Optional[str] = ..., ja4s: _Optional[str] = ..., cipher: _Optional[int] = ..., next_protocol: _Optional[str] = ..., quic: _Optional[bool] = ...) -> None: ...

class HttpSummary(_message.Message):
    __slots__ = ("method", "host", "target", "status", "content_type", "body_bytes", "response")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    BODY_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    method: str
    host: str
    target: str
    status: int
    content_type: str
    body_bytes: int
    response: bool
    def __init__(self, method: _Optional[str] = ..., host: _Optional[str] = ..., target: _Optional[str] = ..., status: _Optional[int] = ..., content_type: _Optional[str] = ..., body_bytes: _Optional[int] = ..., response: _Optional[bool] = ...) -> None: ...

class EmailSummary(_message.Message):
    __slots__ = ("protocol", "command", "mail_from", "rcpt_to", "from_address", "to_address", "subject", "message_id", "mailbox", "upgraded", "tls_sni")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    MAIL_FROM_FIELD_NUMBER: _ClassVar[int]
    RCPT_TO_FIELD_NUMBER: _ClassVar[int]
    FROM_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TO_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    MAILBOX_FIELD_NUMBER: _ClassVar[int]
    UPGRADED_FIELD_NUMBER: _ClassVar[int]
    TLS_SNI_FIELD_NUMBER: _ClassVar[int]
    protocol: str
    command: str
    mail_from: str
    rcpt_to: _containers.RepeatedScalarFieldContainer[str]
    from_address: _containers.RepeatedScalarFieldContainer[str]
    to_address: _containers.RepeatedScalarFieldContainer[str]
    subject: str
    message_id: str
    mailbox: str
    upgraded: bool
    tls_sni: str
    def __init__(self, protocol: _Optional[str] = ..., command: _Optional[str] = ..., mail_from: _Optional[str] = ..., rcpt_to: _Optional[_Iterable[str]] = ..., from_address: _Optional[_Iterable[str]] = ..., to_address: _Optional[_Iterable[str]] = ..., subject: _Optional[str] = ..., message_id: _Optional[str] = ..., mailbox: _Optional[str] = ..., upgraded: _Optional[bool] = ..., tls_sni: _Optional[str] = ...) -> None: ...

class FlowTuple(_message.Message):
    __slots__ = ("src_ip", "dst_ip", "src_port", "dst_port", "ip_proto")
    SRC_IP_FIELD_NUMBER: _ClassVar[int]
    DST_IP_FIELD_NUMBER: _ClassVar[int]
    SRC_PORT_FIELD_NUMBER: _ClassVar[int]
    DST_PORT_FIELD_NUMBER: _ClassVar[int]
    IP_PROTO_FIELD_NUMBER: _ClassVar[int]
    src_ip: bytes
    dst_ip: bytes
    src_port: int
    dst_port: int
    ip_proto: int
    def __init__(self, src_ip: _Optional[bytes] = ..., dst_ip: _Optional[bytes] = ..., src_port: _Optional[int] = ..., dst_port: _Optional[int] = ..., ip_proto: _Optional[int] = ...) -> None: ...

class CallEvent(_message.Message):
    __slots__ = ("call_id", "method", "state", "from_user", "to_user", "from_uri", "to_uri", "sip_packets", "rtp_packets", "rtcp_packets", "sip_bytes", "rtp_bytes", "rtcp_bytes", "codecs", "last_status")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FROM_USER_FIELD_NUMBER: _ClassVar[int]
    TO_USER_FIELD_NUMBER: _ClassVar[int]
    FROM_URI_FIELD_NUMBER: _ClassVar[int]
    TO_URI_FIELD_NUMBER: _ClassVar[int]
    SIP_PACKETS_FIELD_NUMBER: _ClassVar[int]
    RTP_PACKETS_FIELD_NUMBER: _ClassVar[int]
    RTCP_PACKETS_FIELD_NUMBER: _ClassVar[int]
    SIP_BYTES_FIELD_NUMBER: _ClassVar[int]
    RTP_BYTES_FIELD_NUMBER: _ClassVar[int]
    RTCP_BYTES_FIELD_NUMBER: _ClassVar[int]
    CODECS_FIELD_NUMBER: _ClassVar[int]
    LAST_STATUS_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    method: str
    state: str
    from_user: str
    to_user: str
    from_uri: str
    to_uri: str
    sip_packets: int
    rtp_packets: int
    rtcp_packets: int
    sip_bytes: int
    rtp_bytes: int
    rtcp_bytes: int
    codecs: _containers.RepeatedScalarFieldContainer[str]
    last_status: int
    def __init__(self, call_id: _Optional[str] = ..., method: _Optional[str] = ..., state: _Optional[str] = ..., from_user: _Optional[str] = ..., to_user: _Optional[str] = ..., from_uri: _Optional[str] = ..., to_uri: _Optional[str] = ..., sip_packets: _Optional[int] = ..., rtp_packets: _Optional[int] = ..., rtcp_packets: _Optional[int] = ..., sip_bytes: _Optional[int] = ..., rtp_bytes: _Optional[int] = ..., rtcp_bytes: _Optional[int] = ..., codecs: _Optional[_Iterable[str]] = ..., last_status: _Optional[int] = ...) -> None: ...

class HttpEvent(_message.Message):
    __slots__ = ("method", "host", "target", "path", "query", "version", "status", "reason", "request_body_bytes", "response_body_bytes", "content_type", "referrer", "user_agent", "duration_ns", "ja4h", "keywords", "request_body", "response_body", "truncated", "transaction")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUEST_BODY_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_BODY_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    REFERRER_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    DURATION_NS_FIELD_NUMBER: _ClassVar[int]
    JA4H_FIELD_NUMBER: _ClassVar[int]
    KEYWORDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_BODY_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_BODY_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_FIELD_NUMBER: _ClassVar[int]
    method: str
    host: str
    target: str
    path: str
    query: str
    version: str
    status: int
    reason: str
    request_body_bytes: int
    response_body_bytes: int
    content_type: str
    referrer: str
    user_agent: str
    duration_ns: int
    ja4h: str
    keywords: _containers.RepeatedScalarFieldContainer[str]
    request_body: bytes
    response_body: bytes
    truncated: bool
    transaction: int
    def __init__(self, method: _Optional[str] = ..., host: _Optional[str] = ..., target: _Optional[str] = ..., path: _Optional[str] = ..., query: _Optional[str] = ..., version: _Optional[str] = ..., status: _Optional[int] = ..., reason: _Optional[str] = ..., request_body_bytes: _Optional[int] = ..., response_body_bytes: _Optional[int] = ..., content_type: _Optional[str] = ..., referrer: _Optional[str] = ..., user_agent: _Optional[str] = ..., duration_ns: _Optional[int] = ..., ja4h: _Optional[str] = ..., keywords: _Optional[_Iterable[str]] = ..., request_body: _Optional[bytes] = ..., response_body: _Optional[bytes] = ..., truncated: _Optional[bool] = ..., transaction: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("dataset", "start_ns", "end_ns", "session_id", "flow", "filter_ids", "captured", "seq", "call", "dns", "tls", "http", "email")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    START_NS_FIELD_NUMBER: _ClassVar[int]
    END_NS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    FILTER_IDS_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CALL_FIELD_NUMBER: _ClassVar[int]
    DNS_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    HTTP_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    start_ns: int
    end_ns: int
    session_id: str
    flow: FlowTuple
    filter_ids: _containers.RepeatedScalarFieldContainer[str]
    captured: bool
    seq: int
    call: CallEvent
    dns: DnsEvent
    tls: TlsEvent
    http: HttpEvent
    email: EmailEvent
    def __init__(self, dataset: _Optional[str] = ..., start_ns: _Optional[int] = ..., end_ns: _Optional[int] = ..., session_id: _Optional[str] = ..., flow: _Optional[_Union[FlowTuple, _Mapping]] = ..., filter_ids: _Optional[_Iterable[str]] = ..., captured: _Optional[bool] = ..., seq: _Optional[int] = ..., call: _Optional[_Union[CallEvent, _Mapping]] = ..., dns: _Optional[_Union[DnsEvent, _Mapping]] = ..., tls: _Optional[_Union[TlsEvent, _Mapping]] = ..., http: _Optional[_Union[HttpEvent, _Mapping]] = ..., email: _Optional[_Union[EmailEvent, _Mapping]] = ...) -> None: ...

class TlsEvent(_message.Message):
    __slots__ = ("server_name", "alpn", "client_version", "server_version", "client_ciphers", "cipher", "next_protocol", "ja3", "ja3s", "ja4", "ja4_r", "ja4s", "quic", "hello_retry", "packets", "bytes")
    SERVER_NAME_FIELD_NUMBER: _ClassVar[int]
    ALPN_FIELD_NUMBER: _ClassVar[int]
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CIPHERS_FIELD_NUMBER: _ClassVar[int]
    CIPHER_FIELD_NUMBER: _ClassVar[int]
    NEXT_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    JA3_FIELD_NUMBER: _ClassVar[int]
    JA3S_FIELD_NUMBER: _ClassVar[int]
    JA4_FIELD_NUMBER: _ClassVar[int]
    JA4_R_FIELD_NUMBER: _ClassVar[int]
    JA4S_FIELD_NUMBER: _ClassVar[int]
    QUIC_FIELD_NUMBER: _ClassVar[int]
    HELLO_RETRY_FIELD_NUMBER: _ClassVar[int]
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    server_name: str
    alpn: _containers.RepeatedScalarFieldContainer[str]
    client_version: int
    server_version: int
    client_ciphers: _containers.RepeatedScalarFieldContainer[int]
    cipher: int
    next_protocol: str
    ja3: str
    ja3s: str
    ja4: str
    ja4_r: str
    ja4s: str
    quic: bool
    hello_retry: bool
    packets: int
    bytes: int
    def __init__(self, server_name: _Optional[str] = ..., alpn: _Optional[_Iterable[str]] = ..., client_version: _Optional[int] = ..., server_version: _Optional[int] = ..., client_ciphers: _Optional[_Iterable[int]] = ..., cipher: _Optional[int] = ..., next_protocol: _Optional[str] = ..., ja3: _Optional[str] = ..., ja3s: _Optional[str] = ..., ja4: _Optional[str] = ..., ja4_r: _Optional[str] = ..., ja4s: _Optional[str] = ..., quic: _Optional[bool] = ..., hello_retry: _Optional[bool] = ..., packets: _Optional[int] = ..., bytes: _Optional[int] = ...) -> None: ...

class EmailEvent(_message.Message):
    __slots__ = ("protocol", "command", "direction", "from_address", "to_address", "cc_address", "subject", "message_id", "origination_ns", "content_type", "attachments", "helo", "mail_from", "rcpt_to", "mailbox", "user", "size", "truncated", "complete", "body", "x_mailer", "reply_to", "upgraded", "tls_sni", "tls_version")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    FROM_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TO_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CC_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGINATION_NS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    HELO_FIELD_NUMBER: _ClassVar[int]
    MAIL_FROM_FIELD_NUMBER: _ClassVar[int]
    RCPT_TO_FIELD_NUMBER: _ClassVar[int]
    MAILBOX_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    X_MAILER_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    UPGRADED_FIELD_NUMBER: _ClassVar[int]
    TLS_SNI_FIELD_NUMBER: _ClassVar[int]
    TLS_VERSION_FIELD_NUMBER: _ClassVar[int]
    protocol: str
    command: str
    direction: str
    from_address: _containers.RepeatedScalarFieldContainer[str]
    to_address: _containers.RepeatedScalarFieldContainer[str]
    cc_address: _containers.RepeatedScalarFieldContainer[str]
    subject: str
    message_id: str
    origination_ns: int
    content_type: str
    attachments: _containers.RepeatedScalarFieldContainer[str]
    helo: str
    mail_from: str
    rcpt_to: _containers.RepeatedScalarFieldContainer[str]
    mailbox: str
    user: str
    size: int
    truncated: bool
    complete: bool
    body: str
    x_mailer: str
    reply_to: _containers.RepeatedScalarFieldContainer[str]
    upgraded: bool
    tls_sni: str
    tls_version: int
    def __init__(self, protocol: _Optional[str] = ..., command: _Optional[str] = ..., direction: _Optional[str] = ..., from_address: _Optional[_Iterable[str]] = ..., to_address: _Optional[_Iterable[str]] = ..., cc_address: _Optional[_Iterable[str]] = ..., subject: _Optional[str] = ..., message_id: _Optional[str] = ..., origination_ns: _Optional[int] = ..., content_type: _Optional[str] = ..., attachments: _Optional[_Iterable[str]] = ..., helo: _Optional[str] = ..., mail_from: _Optional[str] = ..., rcpt_to: _Optional[_Iterable[str]] = ..., mailbox: _Optional[str] = ..., user: _Optional[str] = ..., size: _Optional[int] = ..., truncated: _Optional[bool] = ..., complete: _Optional[bool] = ..., body: _Optional[str] = ..., x_mailer: _Optional[str] = ..., reply_to: _Optional[_Iterable[str]] = ..., upgraded: _Optional[bool] = ..., tls_sni: _Optional[str] = ..., tls_version: _Optional[int] = ...) -> None: ...

class DnsEvent(_message.Message):
    __slots__ = ("id", "opcode", "header_flags", "qname", "qtype", "qclass", "rcode", "answered", "rtt_ns", "answers", "resolved_ips", "registered_domain", "subdomain", "tunnel_score", "queries", "responses", "alert")
    ID_FIELD_NUMBER: _ClassVar[int]
    OPCODE_FIELD_NUMBER: _ClassVar[int]
    HEADER_FLAGS_FIELD_NUMBER: _ClassVar[int]
    QNAME_FIELD_NUMBER: _ClassVar[int]
    QTYPE_FIELD_NUMBER: _ClassVar[int]
    QCLASS_FIELD_NUMBER: _ClassVar[int]
    RCODE_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    RTT_NS_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_IPS_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    SUBDOMAIN_FIELD_NUMBER: _ClassVar[int]
    TUNNEL_SCORE_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    ALERT_FIELD_NUMBER: _ClassVar[int]
    id: int
    opcode: int
    header_flags: _containers.RepeatedScalarFieldContainer[str]
    qname: str
    qtype: int
    qclass: int
    rcode: int
    answered: bool
    rtt_ns: int
    answers: _containers.RepeatedCompositeFieldContainer[DnsAnswer]
    resolved_ips: _containers.RepeatedScalarFieldContainer[str]
    registered_domain: str
    subdomain: str
    tunnel_score: float
    queries: int
    responses: int
    alert: DnsTunnelAlert
    def __init__(self, id: _Optional[int] = ..., opcode: _Optional[int] = ..., header_flags: _Optional[_Iterable[str]] = ..., qname: _Optional[str] = ..., qtype: _Optional[int] = ..., qclass: _Optional[int] = ..., rcode: _Optional[int] = ..., answered: _Optional[bool] = ..., rtt_ns: _Optional[int] = ..., answers: _Optional[_Iterable[_Union[DnsAnswer, _Mapping]]] = ..., resolved_ips: _Optional[_Iterable[str]] = ..., registered_domain: _Optional[str] = ..., subdomain: _Optional[str] = ..., tunnel_score: _Optional[float] = ..., queries: _Optional[int] = ..., responses: _Optional[int] = ..., alert: _Optional[_Union[DnsTunnelAlert, _Mapping]] = ...) -> None: ...

class DnsAnswer(_message.Message):
    __slots__ = ("name", "type", "ttl", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CLASS_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: int
    ttl: int
    data: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[int] = ..., ttl: _Optional[int] = ..., data: _Optional[str] = ..., **kwargs) -> None: ...

class DnsTunnelAlert(_message.Message):
    __slots__ = ("domain", "score", "components", "clients", "hunters", "first_seen_ns", "last_seen_ns", "queries", "unique_subdomains")
    class ComponentsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    HUNTERS_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_NS_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_SUBDOMAINS_FIELD_NUMBER: _ClassVar[int]
    domain: str
    score: float
    components: _containers.ScalarMap[str, float]
    clients: _containers.RepeatedScalarFieldContainer[str]
    hunters: _containers.RepeatedScalarFieldContainer[str]
    first_seen_ns: int
    last_seen_ns: int
    queries: int
    unique_subdomains: int
    def __init__(self, domain: _Optional[str] = ..., score: _Optional[float] = ..., components: _Optional[_Mapping[str, float]] = ..., clients: _Optional[_Iterable[str]] = ..., hunters: _Optional[_Iterable[str]] = ..., first_seen_ns: _Optional[int] = ..., last_seen_ns: _Optional[int] = ..., queries: _Optional[int] = ..., unique_subdomains: _Optional[int] = ...) -> None: ...

class DnsTunnelStats(_message.Message):
    __slots__ = ("domain", "stats")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    domain: str
    stats: bytes
    def __init__(self, domain: _Optional[str] = ..., stats: _Optional[bytes] = ...) -> None: ...

class PacketBatch(_message.Message):
    __slots__ = ("hunter_id", "epoch", "sequence", "count", "data", "interfaces", "iface", "meta", "sealed_at_ns", "meta_table", "meta_ref", "events", "dns_tunnel", "tls_keylog", "caplen")
    HUNTER_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    IFACE_FIELD_NUMBER: _ClassVar[int]
    META_FIELD_NUMBER: _ClassVar[int]
    SEALED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    META_TABLE_FIELD_NUMBER: _ClassVar[int]
    META_REF_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    DNS_TUNNEL_FIELD_NUMBER: _ClassVar[int]
    TLS_KEYLOG_FIELD_NUMBER: _ClassVar[int]
    CAPLEN_FIELD_NUMBER: _ClassVar[int]
    hunter_id: str
    epoch: int
    sequence: int
    count: int
    data: bytes
    interfaces: _containers.RepeatedCompositeFieldContainer[InterfaceRef]
    iface: bytes
    meta: _containers.RepeatedCompositeFieldContainer[PacketMeta]
    sealed_at_ns: int
    meta_table: _containers.RepeatedCompositeFieldContainer[PacketMeta]
    meta_ref: bytes
    events: _containers.RepeatedCompositeFieldContainer[Event]
    dns_tunnel: _containers.RepeatedCompositeFieldContainer[DnsTunnelStats]
    tls_keylog: _containers.RepeatedScalarFieldContainer[bytes]
    caplen: bytes
    def __init__(self, hunter_id: _Optional[str] = ..., epoch: _Optional[int] = ..., sequence: _Optional[int] = ..., count: _Optional[int] = ..., data: _Optional[bytes] = ..., interfaces: _Optional[_Iterable[_Union[InterfaceRef, _Mapping]]] = ..., iface: _Optional[bytes] = ..., meta: _Optional[_Iterable[_Union[PacketMeta, _Mapping]]] = ..., sealed_at_ns: _Optional[int] = ..., meta_table: _Optional[_Iterable[_Union[PacketMeta, _Mapping]]] = ..., meta_ref: _Optional[bytes] = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., dns_tunnel: _Optional[_Iterable[_Union[DnsTunnelStats, _Mapping]]] = ..., tls_keylog: _Optional[_Iterable[bytes]] = ..., caplen: _Optional[bytes] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("epoch", "sequence", "duplicate", "packets", "hunter_id")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    HUNTER_ID_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    sequence: int
    duplicate: bool
    packets: int
    hunter_id: str
    def __init__(self, epoch: _Optional[int] = ..., sequence: _Optional[int] = ..., duplicate: _Optional[bool] = ..., packets: _Optional[int] = ..., hunter_id: _Optional[str] = ...) -> None: ...

class StreamControl(_message.Message):
    __slots__ = ("acks", "flow", "message")
    ACKS_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[Ack]
    flow: FlowState
    message: str
    def __init__(self, acks: _Optional[_Iterable[_Union[Ack, _Mapping]]] = ..., flow: _Optional[_Union[FlowState, str]] = ..., message: _Optional[str] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("id", "type", "pattern", "enabled", "description", "hunters", "version", "origin")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    HUNTERS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    pattern: str
    enabled: bool
    description: str
    hunters: _containers.RepeatedScalarFieldContainer[str]
    version: int
    origin: str
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., pattern: _Optional[str] = ..., enabled: _Optional[bool] = ..., description: _Optional[str] = ..., hunters: _Optional[_Iterable[str]] = ..., version: _Optional[int] = ..., origin: _Optional[str] = ...) -> None: ...

class SetFiltersRequest(_message.Message):
    __slots__ = ("filters",)
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    def __init__(self, filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ...) -> None: ...

class SetFiltersResponse(_message.Message):
    __slots__ = ("filters", "version")
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    version: int
    def __init__(self, filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ..., version: _Optional[int] = ...) -> None: ...

class DeleteFilterRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteFilterResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class ListFiltersRequest(_message.Message):
    __slots__ = ("hunter_id",)
    HUNTER_ID_FIELD_NUMBER: _ClassVar[int]
    hunter_id: str
    def __init__(self, hunter_id: _Optional[str] = ...) -> None: ...

class ListFiltersResponse(_message.Message):
    __slots__ = ("filters", "version")
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    version: int
    def __init__(self, filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ..., version: _Optional[int] = ...) -> None: ...

class GetFilterRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class SubscribeFiltersRequest(_message.Message):
    __slots__ = ("hunter_id", "filter_types", "processor")
    HUNTER_ID_FIELD_NUMBER: _ClassVar[int]
    FILTER_TYPES_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    hunter_id: str
    filter_types: _containers.RepeatedScalarFieldContainer[str]
    processor: bool
    def __init__(self, hunter_id: _Optional[str] = ..., filter_types: _Optional[_Iterable[str]] = ..., processor: _Optional[bool] = ...) -> None: ...

class FilterUpdate(_message.Message):
    __slots__ = ("version", "full", "filters", "removed")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    version: int
    full: bool
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[int] = ..., full: _Optional[bool] = ..., filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ..., removed: _Optional[_Iterable[str]] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("hunter_id", "hostname", "version", "mode", "interfaces", "capabilities", "epoch", "local_filters", "processor", "via")
    HUNTER_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FILTERS_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_FIELD_NUMBER: _ClassVar[int]
    VIA_FIELD_NUMBER: _ClassVar[int]
    hunter_id: str
    hostname: str
    version: str
    mode: str
    interfaces: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    epoch: int
    local_filters: _containers.RepeatedCompositeFieldContainer[Filter]
    processor: ProcessorInfo
    via: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hunter_id: _Optional[str] = ..., hostname: _Optional[str] = ..., version: _Optional[str] = ..., mode: _Optional[str] = ..., interfaces: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., epoch: _Optional[int] = ..., local_filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ..., processor: _Optional[_Union[ProcessorInfo, _Mapping]] = ..., via: _Optional[_Iterable[str]] = ...) -> None: ...

class ProcessorInfo(_message.Message):
    __slots__ = ("height", "descendants")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DESCENDANTS_FIELD_NUMBER: _ClassVar[int]
    height: int
    descendants: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, height: _Optional[int] = ..., descendants: _Optional[_Iterable[str]] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("accepted", "reason", "processor_id", "heartbeat_interval_ms", "ancestors", "levels_below")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    ANCESTORS_FIELD_NUMBER: _ClassVar[int]
    LEVELS_BELOW_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    processor_id: str
    heartbeat_interval_ms: int
    ancestors: _containers.RepeatedScalarFieldContainer[str]
    levels_below: int
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., processor_id: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., ancestors: _Optional[_Iterable[str]] = ..., levels_below: _Optional[int] = ...) -> None: ...

class HunterCounters(_message.Message):
    __slots__ = ("captured", "forwarded", "acked", "dropped", "queue_batches", "queue_bytes", "batches_sent", "cpu_percent", "rss_bytes", "bytes_captured", "spool", "breaker", "reconnects", "flow", "connect_failures", "mode")
    class DroppedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class ModeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CAPTURED_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_FIELD_NUMBER: _ClassVar[int]
    ACKED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    QUEUE_BATCHES_FIELD_NUMBER: _ClassVar[int]
    QUEUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    BATCHES_SENT_FIELD_NUMBER: _ClassVar[int]
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    BYTES_CAPTURED_FIELD_NUMBER: _ClassVar[int]
    SPOOL_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    RECONNECTS_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    CONNECT_FAILURES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    captured: int
    forwarded: int
    acked: int
    dropped: _containers.ScalarMap[str, int]
    queue_batches: int
    queue_bytes: int
    batches_sent: int
    cpu_percent: float
    rss_bytes: int
    bytes_captured: int
    spool: SpoolCounters
    breaker: str
    reconnects: int
    flow: str
    connect_failures: int
    mode: _containers.ScalarMap[str, int]
    def __init__(self, captured: _Optional[int] = ..., forwarded: _Optional[int] = ..., acked: _Optional[int] = ..., dropped: _Optional[_Mapping[str, int]] = ..., queue_batches: _Optional[int] = ..., queue_bytes: _Optional[int] = ..., batches_sent: _Optional[int] = ..., cpu_percent: _Optional[float] = ..., rss_bytes: _Optional[int] = ..., bytes_captured: _Optional[int] = ..., spool: _Optional[_Union[SpoolCounters, _Mapping]] = ..., breaker: _Optional[str] = ..., reconnects: _Optional[int] = ..., flow: _Optional[str] = ..., connect_failures: _Optional[int] = ..., mode: _Optional[_Mapping[str, int]] = ...) -> None: ...

class SpoolCounters(_message.Message):
    __slots__ = ("dir", "max_bytes", "bytes", "records", "appended", "replayed", "acked", "dropped_batches", "dropped_packets", "torn", "corrupt", "write_errors", "packets")
    DIR_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    APPENDED_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    ACKED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_BATCHES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_PACKETS_FIELD_NUMBER: _ClassVar[int]
    TORN_FIELD_NUMBER: _ClassVar[int]
    CORRUPT_FIELD_NUMBER: _ClassVar[int]
    WRITE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    dir: str
    max_bytes: int
    bytes: int
    records: int
    appended: int
    replayed: int
    acked: int
    dropped_batches: int
    dropped_packets: int
    torn: int
    corrupt: int
    write_errors: int
    packets: int
    def __init__(self, dir: _Optional[str] = ..., max_bytes: _Optional[int] = ..., bytes: _Optional[int] = ..., records: _Optional[int] = ..., appended: _Optional[int] = ..., replayed: _Optional[int] = ..., acked: _Optional[int] = ..., dropped_batches: _Optional[int] = ..., dropped_packets: _Optional[int] = ..., torn: _Optional[int] = ..., corrupt: _Optional[int] = ..., write_errors: _Optional[int] = ..., packets: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("hunter_id", "epoch", "counters", "sent_at_ns", "filter_version", "topology")
    HUNTER_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_NS_FIELD_NUMBER: _ClassVar[int]
    FILTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_FIELD_NUMBER: _ClassVar[int]
    hunter_id: str
    epoch: int
    counters: HunterCounters
    sent_at_ns: int
    filter_version: int
    topology: Topology
    def __init__(self, hunter_id: _Optional[str] = ..., epoch: _Optional[int] = ..., counters: _Optional[_Union[HunterCounters, _Mapping]] = ..., sent_at_ns: _Optional[int] = ..., filter_version: _Optional[int] = ..., topology: _Optional[_Union[Topology, _Mapping]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("registered", "ancestors", "levels_below")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    ANCESTORS_FIELD_NUMBER: _ClassVar[int]
    LEVELS_BELOW_FIELD_NUMBER: _ClassVar[int]
    registered: bool
    ancestors: _containers.RepeatedScalarFieldContainer[str]
    levels_below: int
    def __init__(self, registered: _Optional[bool] = ..., ancestors: _Optional[_Iterable[str]] = ..., levels_below: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("processor_id", "version", "started_at_ns", "uptime_seconds", "hunters_connected", "hunters_stale", "hunters_total", "packets_written", "bytes_written", "batches_written", "batches_duplicate", "output_files", "listen", "insecure", "filter_version", "filter_matches", "write_queue_batches", "write_queue_bytes", "flow", "batches_received", "events_written", "events_malformed", "events_file", "tls_keylog_lines", "tls_keylog_file")
    class FilterMatchesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class EventsWrittenEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PROCESSOR_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HUNTERS_CONNECTED_FIELD_NUMBER: _ClassVar[int]
    HUNTERS_STALE_FIELD_NUMBER: _ClassVar[int]
    HUNTERS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PACKETS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    BATCHES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    BATCHES_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FILES_FIELD_NUMBER: _ClassVar[int]
    LISTEN_FIELD_NUMBER: _ClassVar[int]
    INSECURE_FIELD_NUMBER: _ClassVar[int]
    FILTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    FILTER_MATCHES_FIELD_NUMBER: _ClassVar[int]
    WRITE_QUEUE_BATCHES_FIELD_NUMBER: _ClassVar[int]
    WRITE_QUEUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FLOW_FIELD_NUMBER: _ClassVar[int]
    BATCHES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    EVENTS_MALFORMED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FILE_FIELD_NUMBER: _ClassVar[int]
    TLS_KEYLOG_LINES_FIELD_NUMBER: _ClassVar[int]
    TLS_KEYLOG_FILE_FIELD_NUMBER: _ClassVar[int]
    processor_id: str
    version: str
    started_at_ns: int
    uptime_seconds: float
    hunters_connected: int
    hunters_stale: int
    hunters_total: int
    packets_written: int
    bytes_written: int
    batches_written: int
    batches_duplicate: int
    output_files: _containers.RepeatedScalarFieldContainer[str]
    listen: str
    insecure: bool
    filter_version: int
    filter_matches: _containers.ScalarMap[str, int]
    write_queue_batches: int
    write_queue_bytes: int
    flow: str
    batches_received: int
    events_written: _containers.ScalarMap[str, int]
    events_malformed: int
    events_file: str
    tls_keylog_lines: int
    tls_keylog_file: str
    def __init__(self, processor_id: _Optional[str] = ..., version: _Optional[str] = ..., started_at_ns: _Optional[int] = ..., uptime_seconds: _Optional[float] = ..., hunters_connected: _Optional[int] = ..., hunters_stale: _Optional[int] = ..., hunters_total: _Optional[int] = ..., packets_written: _Optional[int] = ..., bytes_written: _Optional[int] = ..., batches_written: _Optional[int] = ..., batches_duplicate: _Optional[int] = ..., output_files: _Optional[_Iterable[str]] = ..., listen: _Optional[str] = ..., insecure: _Optional[bool] = ..., filter_version: _Optional[int] = ..., filter_matches: _Optional[_Mapping[str, int]] = ..., write_queue_batches: _Optional[int] = ..., write_queue_bytes: _Optional[int] = ..., flow: _Optional[str] = ..., batches_received: _Optional[int] = ..., events_written: _Optional[_Mapping[str, int]] = ..., events_malformed: _Optional[int] = ..., events_file: _Optional[str] = ..., tls_keylog_lines: _Optional[int] = ..., tls_keylog_file: _Optional[str] = ...) -> None: ...

class ListHuntersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListHuntersResponse(_message.Message):
    __slots__ = ("hunters",)
    HUNTERS_FIELD_NUMBER: _ClassVar[int]
    hunters: _containers.RepeatedCompositeFieldContainer[HunterInfo]
    def __init__(self, hunters: _Optional[_Iterable[_Union[HunterInfo, _Mapping]]] = ...) -> None: ...

class GetHunterRequest(_message.Message):
    __slots__ = ("hunter_id",)
    HUNTER_ID_FIELD_NUMBER: _ClassVar[int]
    hunter_id: str
    def __init__(self, hunter_id: _Optional[str] = ...) -> None: ...

class HunterInfo(_message.Message):
    __slots__ = ("hunter_id", "hostname", "version", "mode", "interfaces", "capabilities", "state", "peer", "epoch", "registered_at_ns", "last_heartbeat_ns", "counters", "packets_received", "bytes_received", "batches_received", "batches_duplicate", "streaming", "filter_version", "filters", "processor_filter_version", "local_filters", "via")
    HUNTER_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    INTERFACES_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_NS_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    PACKETS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    BATCHES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    BATCHES_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    FILTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    PROCESSOR_FILTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FILTERS_FIELD_NUMBER: _ClassVar[int]
    VIA_FIELD_NUMBER: _ClassVar[int]
    hunter_id: str
    hostname: str
    version: str
    mode: str
    interfaces: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    state: str
    peer: str
    epoch: int
    registered_at_ns: int
    last_heartbeat_ns: int
    counters: HunterCounters
    packets_received: int
    bytes_received: int
    batches_received: int
    batches_duplicate: int
    streaming: bool
    filter_version: int
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    processor_filter_version: int
    local_filters: _containers.RepeatedCompositeFieldContainer[Filter]
    via: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, hunter_id: _Optional[str] = ..., hostname: _Optional[str] = ..., version: _Optional[str] = ..., mode: _Optional[str] = ..., interfaces: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., state: _Optional[str] = ..., peer: _Optional[str] = ..., epoch: _Optional[int] = ..., registered_at_ns: _Optional[int] = ..., last_heartbeat_ns: _Optional[int] = ..., counters: _Optional[_Union[HunterCounters, _Mapping]] = ..., packets_received: _Optional[int] = ..., bytes_received: _Optional[int] = ..., batches_received: _Optional[int] = ..., batches_duplicate: _Optional[int] = ..., streaming: _Optional[bool] = ..., filter_version: _Optional[int] = ..., filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ..., processor_filter_version: _Optional[int] = ..., local_filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ..., via: _Optional[_Iterable[str]] = ...) -> None: ...

class TopologyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Topology(_message.Message):
    __slots__ = ("processor_id", "state", "depth", "upstream", "upstream_state", "hunters", "processors", "upstream_spool_batches", "upstream_spool_bytes", "peer", "epoch")
    PROCESSOR_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_STATE_FIELD_NUMBER: _ClassVar[int]
    HUNTERS_FIELD_NUMBER: _ClassVar[int]
    PROCESSORS_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_SPOOL_BATCHES_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_SPOOL_BYTES_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    processor_id: str
    state: str
    depth: int
    upstream: str
    upstream_state: str
    hunters: _containers.RepeatedCompositeFieldContainer[HunterInfo]
    processors: _containers.RepeatedCompositeFieldContainer[Topology]
    upstream_spool_batches: int
    upstream_spool_bytes: int
    peer: str
    epoch: int
    def __init__(self, processor_id: _Optional[str] = ..., state: _Optional[str] = ..., depth: _Optional[int] = ..., upstream: _Optional[str] = ..., upstream_state: _Optional[str] = ..., hunters: _Optional[_Iterable[_Union[HunterInfo, _Mapping]]] = ..., processors: _Optional[_Iterable[_Union[Topology, _Mapping]]] = ..., upstream_spool_batches: _Optional[int] = ..., upstream_spool_bytes: _Optional[int] = ..., peer: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class ListCallsRequest(_message.Message):
    __slots__ = ("active", "user", "limit")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    active: bool
    user: str
    limit: int
    def __init__(self, active: _Optional[bool] = ..., user: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class CallInfo(_message.Message):
    __slots__ = ("call_id", "method", "state", "from_user", "to_user", "from_uri", "to_uri", "start_ns", "end_ns", "last_seen_ns", "hunters", "packets", "bytes", "sip_packets", "rtp_packets", "rtcp_packets", "pcap_path")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    FROM_USER_FIELD_NUMBER: _ClassVar[int]
    TO_USER_FIELD_NUMBER: _ClassVar[int]
    FROM_URI_FIELD_NUMBER: _ClassVar[int]
    TO_URI_FIELD_NUMBER: _ClassVar[int]
    START_NS_FIELD_NUMBER: _ClassVar[int]
    END_NS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_NS_FIELD_NUMBER: _ClassVar[int]
    HUNTERS_FIELD_NUMBER: _ClassVar[int]
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    SIP_PACKETS_FIELD_NUMBER: _ClassVar[int]
    RTP_PACKETS_FIELD_NUMBER: _ClassVar[int]
    RTCP_PACKETS_FIELD_NUMBER: _ClassVar[int]
    PCAP_PATH_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    method: str
    state: str
    from_user: str
    to_user: str
    from_uri: str
    to_uri: str
    start_ns: int
    end_ns: int
    last_seen_ns: int
    hunters: _containers.RepeatedScalarFieldContainer[str]
    packets: int
    bytes: int
    sip_packets: int
    rtp_packets: int
    rtcp_packets: int
    pcap_path: str
    def __init__(self, call_id: _Optional[str] = ..., method: _Optional[str] = ..., state: _Optional[str] = ..., from_user: _Optional[str] = ..., to_user: _Optional[str] = ..., from_uri: _Optional[str] = ..., to_uri: _Optional[str] = ..., start_ns: _Optional[int] = ..., end_ns: _Optional[int] = ..., last_seen_ns: _Optional[int] = ..., hunters: _Optional[_Iterable[str]] = ..., packets: _Optional[int] = ..., bytes: _Optional[int] = ..., sip_packets: _Optional[int] = ..., rtp_packets: _Optional[int] = ..., rtcp_packets: _Optional[int] = ..., pcap_path: _Optional[str] = ...) -> None: ...

class ListCallsResponse(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[CallInfo]
    def __init__(self, calls: _Optional[_Iterable[_Union[CallInfo, _Mapping]]] = ...) -> None: ...

class ListAlertsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAlertsResponse(_message.Message):
    __slots__ = ("alerts",)
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[DnsTunnelAlert]
    def __init__(self, alerts: _Optional[_Iterable[_Union[DnsTunnelAlert, _Mapping]]] = ...) -> None: ...
