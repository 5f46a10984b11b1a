"""Built-in scenarios: the demo fleet ``molt demo`` simulates.

About 60 nodes in three zones serving a few services under PDBs, over four simulated
days: 48 h rotation with even churn (``maxAgeSpread: 48h``, so the workers the good
template replaces at 30 h do not all expire in one cliff 48 h later but leave steadily
from then on), a template with a bad image at 6 h (its nodes never become Ready, so the
group rolls back), zone ``b`` out of capacity from 20 h to 26 h, a good template at 30 h
rolled out by replacement, and spot interruptions throughout.
"""

from __future__ import annotations

from molt.sim.scenario import Scenario, parse_scenario

DEMO_YAML = """\
name: demo
duration: 96h
seed: 11
sampleEvery: 15m
controller: {resync: 30s, selectionInterval: 5s, groupInterval: 10s}
cloud:
  launchDelay: 90s
  launchJitter: 60s
  readyDelay: 30s
  launchFailureRate: 0.01
  badImages: [ami-broken]
fleet:
  - name: workers
    spec:
      provider: aws
      minSize: 48
      maxSize: 64
      replicas: 54
      zones: [zone-a, zone-b, zone-c]
      capacity: {types: [on-demand, spot], onDemandBase: 24, spotPercent: 50}
      template:
        instanceTypes: [m5.xlarge]
        image: ami-v1
        aws: {subnets: {zone-a: subnet-a, zone-b: subnet-b, zone-c: subnet-c}}
      strategy: {type: RollingReplace, maxSurge: 3, maxUnavailable: 0}
      health: {readyTimeout: 10m, failureThreshold: 50%, window: 30m, capacityCooldown: 10m}
    ages: {youngest: 1h, oldest: 47h}
  - name: system
    spec:
      provider: aws
      minSize: 6
      maxSize: 9
      replicas: 6
      zones: [zone-a, zone-b, zone-c]
      template:
        instanceTypes: [m5.large]
        image: ami-v1
        aws: {subnets: {zone-a: subnet-a, zone-b: subnet-b, zone-c: subnet-c}}
        taints: [{key: dedicated, value: system, effect: NoSchedule}]
        labels: {pool: system}
    ages: {youngest: 5h, oldest: 40h}
workloads:
  - name: web
    replicas: 60
    requests: {cpu: "1", memory: 2Gi}
    startup: 20s
    nodeSelector: {molt.dev/instance-group: workers}
    pdb: {maxUnavailable: 10%}
  - name: api
    replicas: 30
    requests: {cpu: 1500m, memory: 3Gi}
    startup: 45s
    nodeSelector: {molt.dev/instance-group: workers}
    pdb: {minAvailable: 90%}
  - name: queue
    replicas: 6
    requests: {cpu: "2", memory: 4Gi}
    startup: 2m
    nodeSelector: {molt.dev/instance-group: workers}
    pdb: {maxUnavailable: 1}
  - name: dns
    namespace: kube-system
    replicas: 4
    requests: {cpu: 200m, memory: 256Mi}
    nodeSelector: {pool: system}
    tolerations: [{key: dedicated, operator: Equal, value: system, effect: NoSchedule}]
    pdb: {minAvailable: 3}
policies:
  - name: rotate-48h
    spec:
      rules: {maxAge: 48h, maxAgeSpread: 48h}
      budgets:
        - {maxInFlight: "10%", scope: Cluster}
        - {maxInFlight: 1, scope: Zone}
      drain: {timeout: 30m}
timeline:
  - at: 6h
    templateChange: {group: workers, template: {image: ami-broken}}
  - at: 20h
    zoneOutage: {zone: zone-b, until: 26h}
  - at: 30h
    templateChange: {group: workers, template: {image: ami-v2}}
  - at: 0h
    spotInterruptions: {perHour: 0.25}
"""


def demo_scenario() -> Scenario:
    return parse_scenario(DEMO_YAML, "<built-in demo>")
