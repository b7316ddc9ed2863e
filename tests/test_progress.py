"""Progress bars move inside long work (seconds of video), and -q hides them."""

from __future__ import annotations

from conftest import run_cli

from dsbuilder import progress, synth
from dsbuilder.media import iter_frames


def test_the_bar_moves_within_a_video(tmp_path):
    video = tmp_path / "v.mp4"
    synth.write_video(video, [synth.Shot(synth.texture(1), 100)], size=(64, 96), audio=None)
    seen = []
    with progress.media_bar("test", 4.0 + 2.0, enabled=True) as bar:
        bar.item(4.0, "v")
        for _, t, _ in iter_frames(video, fmt="gray"):
            seen.append(bar._bar.n)
        bar.item(2.0, "next")  # the first item counts as done
        assert bar._bar.n == 4.0
    assert seen[0] < 1.0 and 1.0 < seen[len(seen) // 2] < 3.5 and seen[-1] >= 3.5
    assert progress.current() is None  # no bar outside the block


def test_quiet_hides_bars_and_logs(tmp_path):
    video = tmp_path / "v.mp4"
    synth.write_video(video, [synth.Shot(synth.texture(1), 50)], size=(64, 96))
    photo = tmp_path / "p.jpg"
    synth.write_photo(photo, synth.grace_hopper())
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: q\npeople:\n  - id: p\n    photos: [{photo}]\n    videos: [{video}]\n")
    loud = run_cli("run", str(recipe), "--until", "shots")
    assert loud.returncode == 0, loud.stderr
    assert "shots:" in loud.stderr  # the bar (tqdm writes to stderr)
    quiet = run_cli("-q", "run", str(recipe), "--until", "shots", "--force", "shots")
    assert quiet.returncode == 0, quiet.stderr
    assert "shots:" not in quiet.stderr and "INFO" not in quiet.stderr
