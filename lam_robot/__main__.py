from lam_robot.cli import main

if __name__ == "__main__":  # guarded: the recorder's writer process re-imports the main module
    raise SystemExit(main())
