// Package deploytest checks the deployment files under deploy/ where CI
// can reach them without a container engine or a cluster: the Grafana
// dashboard against the documented metric names (docs/metrics.md), the
// compose file against the Compose Specification's JSON schema and the
// files it mounts, the Helm chart rendered by helm and decoded strictly,
// and the SQLite online backup that docs/operations.md prescribes, run
// against a live store under writes. It has no code of its own, only tests.
package deploytest
