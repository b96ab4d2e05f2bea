package board

import "runtime/debug"

// goarm is the GOARM the binary was built for ("6" for "6,softfloat"), "?"
// if the build info does not say.
var goarm = func() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "GOARM" && s.Value != "" {
				return s.Value[:1]
			}
		}
	}
	return "?"
}()
