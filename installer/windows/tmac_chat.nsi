; T-MAC Chat: per-user Windows installer (no administrator rights), built by makensis 3.x.
;
;   makensis -DARCH=x64|arm64 -DVERSION=0.1.0 -DPAYLOAD=dist\tmac-chat -DICON=build\installer\icons\tmac-chat.ico
;            -DOUTFILE=release\tmac-chat-0.1.0-windows-x64-setup.exe installer\windows\tmac_chat.nsi
;
; installer/bundle.py passes these on Windows; installer/windows/check_nsis.sh compiles the script on
; Linux against a stub payload. Installs into %LOCALAPPDATA%\Programs\T-MAC Chat, adds a Start-menu
; entry and registers the uninstaller under HKCU, so no UAC prompt. Silent: setup.exe /S [/D=dir].
; Each architecture has its own installer: the x64 one refuses an ARM64 Windows (where it would
; run emulated) and points to the ARM64 one, and the ARM64 one refuses an x64 Windows.

Unicode true
ManifestDPIAware true
RequestExecutionLevel user
SetCompressor /SOLID lzma

!ifndef ARCH
  !error "define ARCH (x64 or arm64)"
!endif
!ifndef VERSION
  !error "define VERSION (for example 0.1.0)"
!endif
!ifndef PAYLOAD
  !error "define PAYLOAD: the PyInstaller onedir folder (dist\tmac-chat)"
!endif
!ifndef ICON
  !error "define ICON: the .ico file (python installer/icons.py writes one)"
!endif
!ifndef OUTFILE
  !define OUTFILE "tmac-chat-${VERSION}-windows-${ARCH}-setup.exe"
!endif
!if "${ARCH}" != "x64"
  !if "${ARCH}" != "arm64"
    !error "ARCH must be x64 or arm64, not ${ARCH}"
  !endif
!endif
; VIProductVersion needs four numbers; CI passes VERSION like 0.1.0 or 0.1.0.123
!ifndef VERSION4
  !define VERSION4 "${VERSION}.0"
!endif

!define APP_NAME "T-MAC Chat"
!define EXE_NAME "tmac-chat.exe"
!define PUBLISHER "T-MAC Chat contributors"
!define UNINSTALL_KEY "Software\Microsoft\Windows\CurrentVersion\Uninstall\TMACChat"

!include "MUI2.nsh"
!include "LogicLib.nsh"
!include "x64.nsh"
!include "FileFunc.nsh"

Name "${APP_NAME}"
OutFile "${OUTFILE}"
InstallDir "$LOCALAPPDATA\Programs\${APP_NAME}"
InstallDirRegKey HKCU "${UNINSTALL_KEY}" "InstallLocation"
BrandingText "${APP_NAME} ${VERSION} (${ARCH})"

VIProductVersion "${VERSION4}"
VIFileVersion "${VERSION4}"
VIAddVersionKey /LANG=1033 "ProductName" "${APP_NAME}"
VIAddVersionKey /LANG=1033 "ProductVersion" "${VERSION}"
VIAddVersionKey /LANG=1033 "FileVersion" "${VERSION}"
VIAddVersionKey /LANG=1033 "FileDescription" "${APP_NAME} setup (${ARCH})"
VIAddVersionKey /LANG=1033 "CompanyName" "${PUBLISHER}"
VIAddVersionKey /LANG=1033 "LegalCopyright" "MIT License"

!define MUI_ICON "${ICON}"
!define MUI_UNICON "${ICON}"
!define MUI_ABORTWARNING
!define MUI_FINISHPAGE_RUN "$INSTDIR\${EXE_NAME}"
!define MUI_FINISHPAGE_RUN_TEXT "Start ${APP_NAME}"

!insertmacro MUI_PAGE_WELCOME
!insertmacro MUI_PAGE_DIRECTORY
!insertmacro MUI_PAGE_INSTFILES
!insertmacro MUI_PAGE_FINISH
!insertmacro MUI_UNPAGE_CONFIRM
!insertmacro MUI_UNPAGE_INSTFILES
!insertmacro MUI_LANGUAGE "English"

Function .onInit
  SetShellVarContext current
  ; the setup program itself is 32-bit x86 (emulated on ARM64); the payload is native
  !if "${ARCH}" == "x64"
    ${If} ${IsNativeARM64}
      MessageBox MB_ICONSTOP|MB_OK "This is the x64 installer, and this PC has an ARM64 processor.$\r$\n$\r$\nPlease download the ARM64 installer of ${APP_NAME}: it runs natively and much faster than the x64 build under emulation." /SD IDOK
      Abort
    ${ElseIfNot} ${IsNativeAMD64}
      MessageBox MB_ICONSTOP|MB_OK "${APP_NAME} needs 64-bit Windows (x64 or ARM64)." /SD IDOK
      Abort
    ${EndIf}
  !else
    ${IfNot} ${IsNativeARM64}
      MessageBox MB_ICONSTOP|MB_OK "This is the ARM64 installer, and this PC does not have an ARM64 processor.$\r$\n$\r$\nPlease download the x64 installer of ${APP_NAME}." /SD IDOK
      Abort
    ${EndIf}
  !endif
FunctionEnd

Function un.onInit
  SetShellVarContext current
FunctionEnd

Section "${APP_NAME}" SecMain
  SectionIn RO
  ; a previous version's files are replaced, not mixed with the new ones
  RMDir /r "$INSTDIR\_internal"
  SetOutPath "$INSTDIR"
  File /r "${PAYLOAD}\*.*"
  WriteUninstaller "$INSTDIR\uninstall.exe"
  CreateShortCut "$SMPROGRAMS\${APP_NAME}.lnk" "$INSTDIR\${EXE_NAME}" "" "$INSTDIR\${EXE_NAME}" 0

  ; Apps & features entry, per user (HKCU: no administrator rights needed)
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayName" "${APP_NAME}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayVersion" "${VERSION}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "Publisher" "${PUBLISHER}"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "DisplayIcon" "$INSTDIR\${EXE_NAME},0"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "InstallLocation" "$INSTDIR"
  WriteRegStr HKCU "${UNINSTALL_KEY}" "UninstallString" '"$INSTDIR\uninstall.exe"'
  WriteRegStr HKCU "${UNINSTALL_KEY}" "QuietUninstallString" '"$INSTDIR\uninstall.exe" /S'
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "NoModify" 1
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "NoRepair" 1
  ${GetSize} "$INSTDIR" "/S=0K" $0 $1 $2
  IntFmt $0 "0x%08X" $0
  WriteRegDWORD HKCU "${UNINSTALL_KEY}" "EstimatedSize" "$0"
SectionEnd

Section "Uninstall"
  ; chats, settings and downloaded models live in the user's data folders, not here: they stay
  Delete "$SMPROGRAMS\${APP_NAME}.lnk"
  RMDir /r "$INSTDIR\_internal"
  Delete "$INSTDIR\${EXE_NAME}"
  Delete "$INSTDIR\uninstall.exe"
  RMDir "$INSTDIR"
  DeleteRegKey HKCU "${UNINSTALL_KEY}"
SectionEnd
