//go:build !faultinject

package agent

// wedgePoint lets a faultinject build hang a check (see wedge_inject.go).
func wedgePoint() {}
