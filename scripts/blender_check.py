"""Import a `diffmesh run` GLB into Blender as a user would, and print what arrived (a documented check, not part
of `make test`: Blender as a Python module is ~1 GB).

    python3 -m venv /tmp/bpyenv && /tmp/bpyenv/bin/pip install bpy==5.0.1
    /tmp/bpyenv/bin/python scripts/blender_check.py OUTDIR/mesh.glb 30     # 30 = the video's fps
"""
import sys, bpy
path = sys.argv[1]
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.context.scene.render.fps = round(float(sys.argv[2])) if len(sys.argv) > 2 else 30
bpy.ops.import_scene.gltf(filepath=path)
arms = [o for o in bpy.data.objects if o.type == "ARMATURE"]
meshes = [o for o in bpy.data.objects if o.type == "MESH"]
print("armatures", len(arms), "bones", len(arms[0].data.bones) if arms else None)
print("meshes", len(meshes), "modifiers", [m.type for o in meshes for m in o.modifiers])
for a in bpy.data.actions:
    print("action", a.name, "frame_range", tuple(a.frame_range))
print("scene fps", bpy.context.scene.render.fps, "frames", bpy.context.scene.frame_start, bpy.context.scene.frame_end)
# pose at a middle frame: world position of the head bone vs the first frame
arm = arms[0]
bpy.context.scene.frame_set(1); h1 = (arm.matrix_world @ arm.pose.bones["head"].head).copy()
bpy.context.scene.frame_set(60); h60 = (arm.matrix_world @ arm.pose.bones["head"].head).copy()
print("head moved (m)", (h60 - h1).length)
