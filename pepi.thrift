/*******************************************************************************
 * pepi.thrift — PEPI's interface, wire-compatible, plus the fleet extension.
 *
 * Camera, CameraServer and ImageUnavailable keep PEPI's method names, argument
 * ids and semantics, so PEPI's clients and contract tests work unchanged.
 * Image lists are declared `binary` (identical to `string` on the wire, but
 * never UTF-8-decoded by readers).
 ******************************************************************************/

/* Thrown when a requested image is not available on the server */
exception ImageUnavailable {
    1: string message,
}

/* A Camera provides images from a physical camera as RGB arrays (PEPI). */
service Camera {
    list<list<list<i16>>> still(),
    list<list<list<i16>>> low_res_still(),
    list<i16> get_max_resolution(),
    list<i16> get_current_resolution(),
    oneway void set_resolution(1:i16 x, 2:i16 y)
}

/* A CameraServer wraps the cameras of one node (PEPI). */
service CameraServer {
    /* True, always */
    bool ping(),
    /* this server's unique identifier (the node id) */
    string identify(),
    /* one http:// MJPEG stream URL per camera */
    list<string> stream_urls(),
    /* accepted always; powers off only when the node allows it */
    oneway void shutdown(),
    /* capture now and store under data_code; a code already held is captured
       again and the older capture is kept under a renamed id */
    oneway void start_capture(1:string data_code),
    /* one PNG per camera; waits (bounded) for a capture still in progress */
    list<binary> retrieve_stills_png(1:string with_data_code) throws (1:ImageUnavailable unavailable),
    /* one JPEG per camera; retrieval never deletes (see release) */
    list<binary> retrieve_stills_jpg(1:string with_data_code) throws (1:ImageUnavailable unavailable),
    /* method name -> argument names */
    map<string, list<string>> enumerate_methods()
}

/*******************************************************************************
 * Fleet extension: what the controller needs for loss-free retrieval.
 *
 * Every extension call carries the node's secret: a random token the node keeps in
 * its data dir and publishes, retained, on pepi/v1/nodes/<id>/secret, a topic the
 * broker's ACL lets only the controller read. A wrong or missing secret is answered
 * with Unauthorized and the call does nothing. PEPI's methods above take none.
 ******************************************************************************/

/* The call's secret is missing or wrong: nothing was read or deleted */
exception Unauthorized {
    1: string message,
}

/* What a camera applied to one frame, read back from its metadata (libcamera's controls);
   a field the camera did not report is unset. */
struct FrameControls {
    1: optional i64 exposure_time_us,
    2: optional double analogue_gain,
    3: optional double red_gain,             /* fixed or automatic white balance gains */
    4: optional double blue_gain,
    5: optional i32 colour_temperature_k,
    6: optional double lens_position,        /* dioptres (1 / focus distance in m) */
    7: optional i64 frame_duration_us,
    8: optional bool auto_exposure,
    9: optional bool auto_white_balance,
    10: optional string af_mode,             /* manual | auto | continuous */
}

/* Fields 8 and on came later: optional, so older readers skip them and a reply without
   them (an older node) still reads. */
struct FrameInfo {
    1: i32 camera,
    2: double timestamp,   /* wall clock (Unix s) of the frame on the node */
    3: i32 width,
    4: i32 height,
    5: string format,      /* jpeg | png | raw */
    6: i64 size,           /* bytes of the stored file */
    7: string sha256,
    8: optional bool in_sync,               /* taken frame-locked (libcamera SyncReady);
                                               unset: the camera does not use frame sync */
    9: optional FrameControls controls,     /* unset: the camera reported none */
}

struct CaptureInfo {
    1: string capture_id,
    2: double received_at,
    3: double fired_at,
    4: list<FrameInfo> frames,
    5: bool retrieved,     /* some client already fetched it */
    6: string source,      /* mqtt | thrift */
}

struct ImageBlob {
    1: binary data,
    2: string sha256,      /* of data: for the stored format the one taken when it was
                              written (the receiver verifies data against it) */
    3: FrameInfo frame,
}

/* The head of an image that follows the reply as raw bytes (stream_image). */
struct ImageStream {
    1: i64 size,           /* raw bytes that follow */
    2: string sha256,      /* of those bytes, as for ImageBlob */
    3: FrameInfo frame,
}

service FleetCameraServer extends CameraServer {
    /* every capture the node still holds, oldest first */
    list<CaptureInfo> list_captures(1:string secret) throws (1:Unauthorized unauthorized),
    /* one capture's metadata; waits (bounded) for one still in progress */
    CaptureInfo get_capture(1:string capture_id, 2:string secret) throws (1:ImageUnavailable unavailable, 2:Unauthorized unauthorized),
    /* one image as stored (format = its stored format) or converted (cached) */
    ImageBlob fetch_image(1:string capture_id, 2:i32 camera, 3:string format, 4:string secret) throws (1:ImageUnavailable unavailable, 2:Unauthorized unauthorized),
    /* fetch_image without the copy through Thrift: after this reply the client sends one
       byte, 0x01 to receive or 0x00 to decline, and the node then writes exactly `size`
       raw bytes on this connection (sendfile of the stored file), after which the
       connection carries Thrift again. Only for clients that know this (the controller). */
    ImageStream stream_image(1:string capture_id, 2:i32 camera, 3:string format, 4:string secret) throws (1:ImageUnavailable unavailable, 2:Unauthorized unauthorized),
    /* the controller verified its copy: delete it here; false if not held */
    bool release(1:string capture_id, 2:string secret) throws (1:Unauthorized unauthorized),
    /* release, checked and done in one step: delete the capture held as capture_id if its
       images have exactly these checksums (camera -> sha256), else the one holding the first
       of them (ours renamed aside when a PEPI client re-used the code); the id deleted, or
       "" if no held capture matches */
    string release_matching(1:string capture_id, 2:map<i32,string> sha256s, 3:string secret) throws (1:Unauthorized unauthorized),
}
