"""The recordings part of the OpenAPI document: paths and schemas.

``recording_paths`` and ``recording_schemas`` join the paths and schemas of
openapi_paths and openapi_schemas. The files under /vod are not part of the
document; docs/api.md describes them.
"""

from __future__ import annotations

from typing import Any

from realcast_box.api import validation
from realcast_box.api.openapi_paths import (
    CHANGE_ITEM,
    READ_ITEM,
    READ_LIST,
    WRITE_BODY,
    _created,
    _links,
    _list_parameters,
    _list_response,
    _operation,
    _path_parameter,
    _query,
    _response,
    scoped,
)
from realcast_box.api.openapi_schemas import (
    _id,
    _object,
    _timestamp,
    optional_text_field,
    schema_ref,
    text_field,
)
from realcast_box.api.recordings import MAX_URL_LENGTH

RECORDINGS_TAG = {
    "name": "recordings",
    "description": "Recordings of live sessions and pulled URLs, served under /vod.",
}
RECORDING_STATUSES = ("recording", "processing", "completed", "failed")
NULLABLE_TEXT = {"type": ["string", "null"]}


def recording_schemas() -> dict[str, Any]:
    title = text_field(validation.MAX_NAME_LENGTH, "Title of the recording.")
    description = optional_text_field(
        validation.MAX_DESCRIPTION_LENGTH, "Description of the recording."
    )
    recording = _object(
        {
            "id": _id("rec", "Recording id."),
            "app_id": _id("app", "App of the recording's stream."),
            "stream_id": _id("stream", "Stream that was recorded."),
            "title": {"type": "string"},
            "description": {"type": "string"},
            "source": {
                "type": "string",
                "enum": ["live", "pull"],
                "description": "live: the stream's live session; pull: an"
                " external stream_url.",
            },
            "stream_url": {
                **NULLABLE_TEXT,
                "description": "The pulled URL; null for a live recording.",
            },
            "status": {
                "type": "string",
                "enum": list(RECORDING_STATUSES),
                "description": "recording, then processing while the file is"
                " finalized, then completed or failed.",
            },
            "failure_reason": {
                **NULLABLE_TEXT,
                "description": "Why the recording failed, such as disk_full;"
                " null unless failed.",
            },
            "cdn_url": {
                **NULLABLE_TEXT,
                "description": "URL of the MP4 under /vod, which accepts range"
                " requests; null until completed.",
            },
            "thumbnail_url": {
                **NULLABLE_TEXT,
                "description": "URL of a JPEG poster frame taken about 10% into"
                " the recording; null until completed or without video.",
            },
            "duration": {
                "type": ["number", "null"],
                "minimum": 0,
                "description": "Length in seconds; null until completed.",
            },
            "file_size": {
                "type": ["integer", "null"],
                "minimum": 0,
                "description": "Size of the file in bytes; null while recording.",
            },
            "created_at": _timestamp("When the recording started."),
            "completed_at": _timestamp("When it completed or failed.", nullable=True),
        },
        description="A recording and the URLs of its files.",
    )
    return {
        "Recording": recording,
        "RecordingStart": _object(
            {
                "stream_id": text_field(validation.MAX_ID_LENGTH, "Stream to record."),
                "app_id": text_field(
                    validation.MAX_ID_LENGTH,
                    "App of the stream; a different app gets 400.",
                ),
                "stream_url": {
                    "type": "string",
                    "maxLength": MAX_URL_LENGTH,
                    "description": "Omit it, or give the box's own RTMP or HLS"
                    " URL of the stream, to record the live session. Another"
                    " rtmp, rtmps, http or https URL is pulled when its host is"
                    " in the recordings_pull_allow_list setting, else 400.",
                },
                "title": {**title, "description": "Defaults to the stream's title."},
                "description": description,
            },
            required=("stream_id",),
        ),
        "RecordingUpdate": _object(
            {"title": title, "description": description},
            required=(),
            description="Fields to change; absent ones keep their value.",
        ),
    }


def _list_operation(operation_id: str, summary: str) -> dict[str, Any]:
    stream_filter = _query(
        "stream_id",
        {"type": "string", "minLength": 1, "maxLength": validation.MAX_ID_LENGTH},
        "Only the recordings of this stream.",
    )
    return _operation(
        operation_id,
        "recordings",
        summary,
        {"200": _list_response("Recording", "One page of recordings.")},
        READ_LIST,
        security=scoped("recordings:read"),
        parameters=[*_list_parameters(), stream_filter],
        description="Without app_id, the recordings of all the caller's apps."
        " An API key that names another app gets 404.",
    )


def recording_paths() -> dict[str, Any]:
    recording = _response("The recording.", schema_ref("Recording"))
    recording_id = _path_parameter("recording_id", "Recording id.")
    stream_id = _path_parameter("stream_id", "Stream id.")
    return {
        "/api/recordings/start": {
            "post": _operation(
                "startRecording",
                "recordings",
                "Start recording a stream",
                {
                    "201": _created(
                        "The new recording, in status recording.",
                        "Recording",
                        _links(
                            "recording_id",
                            "getRecording",
                            "updateRecording",
                            "deleteRecording",
                        ),
                    )
                },
                (*WRITE_BODY, 409),
                security=scoped("recordings:write"),
                body="RecordingStart",
                description="409 when the stream already has an active recording,"
                " or when it is not live and no external stream_url is given.",
            )
        },
        "/api/recordings/stop/{stream_id}": {
            "parameters": [stream_id],
            "post": _operation(
                "stopRecording",
                "recordings",
                "Stop a stream's active recording",
                {"200": recording},
                CHANGE_ITEM,
                security=scoped("recordings:write"),
                description="Returns once the file is finalized, with status"
                " completed (or failed), the duration and the file size. 404 when"
                " the stream has no active recording.",
            ),
        },
        "/api/recordings/": {
            "get": _list_operation("listRecordings", "List recordings, newest first")
        },
        "/api/recordings": {
            "get": _list_operation(
                "listRecordingsWithoutSlash",
                "List recordings, newest first (same as /api/recordings/)",
            )
        },
        "/api/recordings/{recording_id}": {
            "parameters": [recording_id],
            "get": _operation(
                "getRecording",
                "recordings",
                "Get a recording",
                {"200": recording},
                READ_ITEM,
                security=scoped("recordings:read"),
            ),
            "put": _operation(
                "updateRecording",
                "recordings",
                "Update a recording's title or description",
                {"200": recording},
                WRITE_BODY,
                security=scoped("recordings:write"),
                body="RecordingUpdate",
            ),
            "delete": _operation(
                "deleteRecording",
                "recordings",
                "Delete a recording and its files",
                {"204": _response("Deleted.")},
                (*CHANGE_ITEM, 409),
                security=scoped("recordings:write"),
                description="409 while the recording is recording or processing.",
            ),
        },
    }
