"""Unit tests of ladder planning: fitting, no upscaling, frame-rate limits."""

from __future__ import annotations

from realcast_box.media.ladder import Quality, fit_size, plan_ladder


def quality(name, width, height, fps=30, bitrate=1000):
    return Quality(name, width, height, bitrate, fps)


def test_fit_size_keeps_aspect_ratio_of_wider_source():
    assert fit_size(1280, 720, 1920, 800) == (1280, 534)


def test_fit_size_keeps_aspect_ratio_of_portrait_source():
    assert fit_size(1280, 720, 720, 1280) == (404, 720)


def test_fit_size_never_upscales():
    assert fit_size(1920, 1080, 1280, 720) == (1280, 720)


def test_fit_size_rounds_odd_source_down_to_even():
    assert fit_size(1920, 1080, 641, 361) == (640, 360)


def test_fit_size_gives_even_sides():
    width, height = fit_size(854, 480, 1920, 1080)
    assert (width % 2, height % 2) == (0, 0)
    assert (width, height) == (854, 480)


def test_plan_ladder_drops_quality_larger_than_source():
    kept, dropped = plan_ladder(
        [quality("1080p", 1920, 1080), quality("360p", 640, 360)], 1280, 720, 30
    )
    assert [plan.name for plan in kept] == ["360p"]
    assert dropped[0].name == "1080p"
    assert "does not upscale" in dropped[0].reason


def test_plan_ladder_keeps_box_larger_in_one_direction_only():
    kept, dropped = plan_ladder([quality("720p", 1280, 720)], 720, 1280, 30)
    assert dropped == []
    assert (kept[0].width, kept[0].height) == (404, 720)


def test_plan_ladder_drops_quality_above_source_frame_rate():
    kept, dropped = plan_ladder([quality("hfr", 640, 360, fps=60)], 1280, 720, 30)
    assert kept == []
    assert "frame rate" in dropped[0].reason


def test_plan_ladder_keeps_30_fps_for_ntsc_source():
    kept, _ = plan_ladder([quality("sd", 640, 360, fps=30)], 1280, 720, 29.97)
    assert kept[0].fps == 29.97


def test_plan_ladder_with_unknown_frame_rate_keeps_quality_rate():
    kept, dropped = plan_ladder([quality("sd", 640, 360, fps=60)], 1280, 720, None)
    assert dropped == []
    assert kept[0].fps == 60


def test_quality_cost_ranks_by_pixel_rate():
    assert quality("a", 1280, 720, fps=60).cost > quality("b", 1920, 1080, 24).cost
