// Package critools keeps the packages of critest's test main in this module's build list, so
// that `go test -c sigs.k8s.io/cri-tools/cmd/critest` builds critest at the pinned version.
package critools

import (
	_ "github.com/onsi/ginkgo/v2"
	_ "github.com/onsi/gomega"
	_ "sigs.k8s.io/cri-tools/pkg/benchmark"
	_ "sigs.k8s.io/cri-tools/pkg/framework"
	_ "sigs.k8s.io/cri-tools/pkg/validate"
)
