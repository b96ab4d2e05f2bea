package agent

import (
	"context"

	"github.com/ota-agent/ota-agent/store"
)

// fetchFile GETs a release file for stage. A partial download that an
// earlier, cut run left (store.Stage.Partial) is continued with a Range
// request from where it stops, if the server still has the same file (its
// validator, in If-Range) and supports Range; otherwise the whole file
// comes and replaces it. The returned Download (Body, Size, Max, Resume)
// is for stage.Download, and keeps the server's validator so that a cut
// in this transfer can be continued in turn. The caller closes the response.
func (a *Agent) fetchFile(ctx context.Context, stage *store.Stage, url, file string) (*response, store.Download, error) {
	d := store.Download{Max: a.app.MaxFileSize}
	rs, ok := stage.Partial(file)
	if !ok {
		resp, err := a.c.get(ctx, url, nil)
		if err != nil {
			return nil, d, err
		}
		d.Body, d.Size, d.Resume.Validator = resp, resp.ContentLength, resp.validator()
		return resp, d, nil
	}
	resp, start, total, err := a.c.getFrom(ctx, url, rs.Offset, rs.Validator)
	if err != nil {
		return nil, d, err
	}
	d.Body, d.Size = resp, total
	d.Resume = store.Resume{Offset: start, Validator: resp.validator()}
	if start > 0 {
		if d.Resume.Validator == "" {
			// The If-Range matched: it is the same file.
			d.Resume.Validator = rs.Validator
		}
		a.log.Info().Str("url", url).Int64("from", start).Msg("resuming a cut download")
	} else {
		a.log.Debug().Str("url", url).Int64("kept", rs.Offset).Msg("the server sent the whole file: the partial download is dropped")
	}
	return resp, d, nil
}
