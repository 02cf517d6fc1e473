// The shapes of the dashboard API (docs/dashboard-api.md).

export interface Namespace {
  name: string;
}

export interface ConfigRef {
  kind: string;
  namespace: string;
  name: string;
}

export interface RouteWeight {
  subset?: string;
  host?: string;
  weight: number;
}

export interface NodeTraffic {
  protocol: string;
  rates?: Record<string, string>;
}

/** A Cytoscape node's `data`, with Kiali's fields and Weft's `weft` addition. */
export interface GraphNodeData {
  id: string;
  nodeType: string;
  namespace?: string;
  cluster?: string;
  app?: string;
  version?: string;
  workload?: string;
  service?: string;
  parent?: string;
  isBox?: string;
  isRoot?: boolean;
  isOutside?: boolean;
  isIdle?: boolean;
  isGateway?: unknown;
  isServiceEntry?: { location?: string; hosts?: string[] };
  hasVS?: { hostnames?: string[] } | boolean;
  hasFaultInjection?: boolean;
  hasTrafficShifting?: boolean;
  hasCB?: boolean;
  hasRequestTimeout?: boolean;
  hasMirroring?: boolean;
  destServices?: { namespace: string; name: string }[];
  traffic?: NodeTraffic[];
  weft?: { config?: ConfigRef[]; weights?: RouteWeight[] };
}

export interface ResponseDetail {
  flags?: Record<string, string>;
  hosts?: Record<string, string>;
}

export interface GraphEdgeData {
  id: string;
  source: string;
  target: string;
  responseTime?: string;
  isMTLS?: string;
  traffic?: {
    protocol: string;
    rates?: Record<string, string>;
    responses?: Record<string, ResponseDetail>;
  };
}

export interface GraphResponse {
  timestamp?: number;
  duration?: number;
  graphType?: string;
  elements: {
    nodes?: { data: GraphNodeData }[];
    edges?: { data: GraphEdgeData }[];
  };
}

export interface Status {
  version?: string;
  metrics?: {
    source?: string;
    series?: number;
    bytes?: number;
    scrapeInterval?: number;
    retention?: number;
  };
  tracing?: { source?: string };
}

export interface Pod {
  name: string;
  address?: string;
  ready?: boolean;
  proxy?: string;
  sync?: string;
}

export interface ServiceSummary {
  namespace: string;
  name: string;
  app?: string;
  workloads?: string[];
  rps?: number | null;
  successRate?: number | null;
  p50?: number | null;
  p95?: number | null;
  p99?: number | null;
}

export interface WorkloadSummary extends ServiceSummary {
  version?: string;
  services?: string[];
  pods?: Pod[];
}

export interface MetricSeries {
  name: string;
  values: (number | null)[];
}

export interface MetricChart {
  id: string;
  title: string;
  unit: string;
  series: MetricSeries[];
}

export interface MetricsResponse {
  start: number;
  end: number;
  step: number;
  timestamps: number[];
  charts: MetricChart[];
}

export interface ConfigMessage {
  code: string;
  level: string;
  message: string;
  path?: string;
  /** The 1-based line of `path` in the resource's `yaml`. */
  line?: number;
}

export interface ConfigResource {
  kind: string;
  apiVersion?: string;
  namespace: string;
  name: string;
  yaml?: string;
  messages?: ConfigMessage[];
}

export interface Proxy {
  name: string;
  namespace: string;
  workload?: string;
  address?: string;
  version?: string;
  sync?: string;
  sent?: string;
  acked?: string;
  nacked?: string;
  nackReason?: string;
  connectedSeconds?: number;
}

export interface ZipkinEndpoint {
  serviceName?: string;
  ipv4?: string;
  ipv6?: string;
  port?: number;
}

export interface ZipkinSpan {
  traceId: string;
  id: string;
  parentId?: string;
  name?: string;
  timestamp?: number;
  duration?: number;
  kind?: string;
  shared?: boolean;
  localEndpoint?: ZipkinEndpoint;
  remoteEndpoint?: ZipkinEndpoint;
  tags?: Record<string, string>;
  annotations?: { timestamp: number; value: string }[];
}

export type ZipkinTrace = ZipkinSpan[];
